"""Segments, per environment: named sets of users (ids and clauses) that flag rules target."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, scoped_session

from flags_service.model import InvalidDocument, state_of, validate_segment
from flags_service.storage.environments import EnvironmentStore
from flags_service.storage.errors import FlagNotFound, InUse, StaleVersion
from flags_service.storage.flags import Change, flag_documents
from flags_service.storage.tables import segments_table


class SegmentStore:
    def __init__(self, session: Session | scoped_session[Session], environments: Iterable[str]) -> None:
        self.session = session
        self.environments = list(environments)
        self.environment_store = EnvironmentStore(session, self.environments)

    def list_segments(self, environment: str) -> list[dict[str, Any]]:
        rows = self.session.execute(
            select(segments_table.c.document, segments_table.c.version)
            .where(segments_table.c.environment == environment)
            .order_by(segments_table.c.key)
        )
        return [{**document, "environment": environment, "version": version} for document, version in rows]

    def get_segment(self, environment: str, key: str) -> dict[str, Any]:
        row = self.session.execute(
            select(segments_table.c.document, segments_table.c.version).where(
                segments_table.c.environment == environment, segments_table.c.key == key
            )
        ).first()
        if row is None:
            raise FlagNotFound(f"segment {key} in {environment}")
        return {**row.document, "environment": environment, "version": row.version}

    def put_segment(
        self, environment: str, document: Mapping[str, Any], *, expected_version: int | None, key: str | None = None
    ) -> Change:
        """Create (``key`` None) or replace the segment ``key``."""
        if environment not in self.environments:
            raise FlagNotFound(f"environment {environment}")
        if key is not None:
            document = {**document, "key": document.get("key") or key}
            if document["key"] != key:
                raise InvalidDocument({"key": "cannot be changed"})
        doc = validate_segment(document)
        try:
            current: dict[str, Any] | None = self.get_segment(environment, doc["key"])
        except FlagNotFound:
            current = None
        if expected_version is not None and (current is None or current["version"] != expected_version):
            raise StaleVersion(None if current is None else current["version"])
        if current is None:
            if key is not None:
                raise FlagNotFound(f"segment {key} in {environment}")
            version = 1
            self.session.execute(
                insert(segments_table).values(environment=environment, key=doc["key"], version=1, document=doc)
            )
        else:
            version = current["version"] + 1
            result = self.session.execute(
                update(segments_table)
                .where(
                    segments_table.c.environment == environment,
                    segments_table.c.key == doc["key"],
                    segments_table.c.version == current["version"],
                )
                .values(version=version, document=doc)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise StaleVersion(None)
        before = None if current is None else {k: v for k, v in current.items() if k not in ("version", "environment")}
        return Change(doc["key"], version, before, doc, self.environment_store.bump([environment]))

    def delete_segment(self, environment: str, key: str, *, expected_version: int | None) -> Change:
        current = self.get_segment(environment, key)
        if expected_version is not None and current["version"] != expected_version:
            raise StaleVersion(current["version"])
        users = [
            doc["key"]
            for doc in flag_documents(self.session).values()
            for rule in state_of(doc, environment)["rules"]
            for clause in rule["clauses"]
            if clause["op"] == "segmentMatch" and key in clause["values"]
        ]
        if users:
            raise InUse(f"used by {', '.join(dict.fromkeys(users))}")
        self.session.execute(
            segments_table.delete().where(segments_table.c.environment == environment, segments_table.c.key == key)
        )
        before = {k: v for k, v in current.items() if k not in ("version", "environment")}
        return Change(key, current["version"] + 1, before, None, self.environment_store.bump([environment]))
