"""``vibelux-migrations check [--since REF] [--root DIR]``: fail when the previous release could not run on
the schema the migrations make (exit 1, one line per finding); a history or ref it cannot read is one line
and exit 2.

vibelux-migrations check                 every migration against the schema before it (make config-check)
vibelux-migrations check --since v1.4.0  what was added since the running release, as one release
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from service_kit.migration_safety.check import CheckError, check_repository
from service_kit.migration_safety.parse import MigrationSyntaxError

HINT = (
    "a planned removal is the contract step of an expand/contract pair: mark its migration with "
    'contract = ("<expand revision>",) once that release has shipped (docs/conventions.md, "Migrations")'
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vibelux-migrations", description="Check Alembic migrations.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="can the previous release run against the new schema?")
    check.add_argument("--since", metavar="REF", help="git ref of the previous release (default: each migration)")
    check.add_argument("--root", type=Path, default=Path(), help="repository root (default: the current directory)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = check_repository(args.root.resolve(), since=args.since)
    except (CheckError, MigrationSyntaxError) as error:
        print(f"vibelux-migrations: {error}", file=sys.stderr)
        return 2
    for finding in report.findings:
        print(finding.message, file=sys.stdout if finding.allowed else sys.stderr)
    against = f"the release at {args.since}" if args.since else "the schema before each"
    if report.problems:
        print(f"{len(report.problems)} problem(s) for the previous release; {HINT}", file=sys.stderr)
        return 1
    histories = f"{report.migrations} in {len(report.histories)} histories"
    print(f"migrations: {histories}, read and upgraded on SQLite, checked against {against}: safe")
    return 0


if __name__ == "__main__":
    sys.exit(main())
