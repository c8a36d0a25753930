"""Migration safety: can the previous release still run against the schema after the new migrations?

``check_repository(root, since=None)`` (what ``vibelux-migrations check`` and a release run) returns a
``Report`` whose ``problems`` are one line each. ``rules`` is the pure classification, ``parse`` reads a
migration's source without running it, ``database`` upgrades a real SQLite file step by step for what the
reading cannot see. The expand/contract marker is documented in docs/conventions.md.
"""

from service_kit.migration_safety.check import CheckError, Finding, Report, check_repository
from service_kit.migration_safety.parse import MigrationSyntaxError

__all__ = ["CheckError", "Finding", "MigrationSyntaxError", "Report", "check_repository"]
