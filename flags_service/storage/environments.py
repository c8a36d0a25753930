"""Environments: their snapshot versions, and the compiled snapshot SDKs and OFREP serve."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, scoped_session

from flags_service.model import compile_flag, compile_segment
from flags_service.storage.errors import FlagNotFound
from flags_service.storage.tables import aware, environments_table, flags_table, segments_table, utc_now
from service_kit.tiers import TIERS


class EnvironmentStore:
    def __init__(self, session: Session | scoped_session[Session], environments: Iterable[str]) -> None:
        self.session = session
        self.environments = list(environments)

    def ensure_environments(self) -> None:
        """Rows for environments added to the config since the last start (at version 1)."""
        existing = set(self.session.scalars(select(environments_table.c.name)))
        for name in self.environments:
            if name not in existing:
                self.session.execute(insert(environments_table).values(name=name, version=1))

    def versions(self) -> dict[str, int]:
        rows = self.session.execute(select(environments_table.c.name, environments_table.c.version))
        return {name: version for name, version in rows if name in self.environments}

    def last_changes(self) -> dict[str, float]:
        """When each environment last changed (epoch seconds); environments never changed are left out."""
        rows = self.session.execute(select(environments_table.c.name, environments_table.c.changed_at))
        return {
            name: aware(changed_at).timestamp()
            for name, changed_at in rows
            if name in self.environments and changed_at is not None
        }

    def version(self, environment: str) -> int:
        version: int | None = self.session.scalar(
            select(environments_table.c.version).where(environments_table.c.name == environment)
        )
        if version is None:
            raise FlagNotFound(f"environment {environment}")
        return version

    def bump(self, names: Iterable[str]) -> dict[str, int]:
        """Move the snapshot version of each of ``names`` and stamp the change; returns the new versions."""
        bumped: dict[str, int] = {}
        now = utc_now()
        for name in sorted(set(names)):
            self.session.execute(
                update(environments_table)
                .where(environments_table.c.name == name)
                .values(version=environments_table.c.version + 1, changed_at=now)
            )
            bumped[name] = self.version(name)
        return bumped

    def snapshot(self, environment: str) -> dict[str, Any]:
        """Everything an SDK needs to evaluate locally in ``environment``, with its version and the
        platform's tiers (the SDK refuses a context naming another, as OFREP does)."""
        version = self.version(environment)
        return {
            "environment": environment,
            "version": version,
            "tiers": list(TIERS),
            "flags": {
                document["key"]: compile_flag(document, environment)
                for document in self.session.scalars(select(flags_table.c.document))
            },
            "segments": {
                document["key"]: compile_segment(document)
                for document in self.session.scalars(
                    select(segments_table.c.document).where(segments_table.c.environment == environment)
                )
            },
        }
