"""Flag documents: create, replace, patch one environment, delete, history with diffs, rollback."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, scoped_session

from flags_service.model import InvalidDocument, compile_flag, diff, prerequisite_cycle, state_of, validate_flag
from flags_service.storage.environments import EnvironmentStore
from flags_service.storage.errors import AlreadyExists, FlagNotFound, InUse, StaleVersion
from flags_service.storage.tables import flag_versions_table, flags_table, segments_table, utc_now


@dataclass(frozen=True)
class Change:
    """What a write did: the new version, the documents before/after and the environments it touched."""

    key: str
    version: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    environments: dict[str, int]


def flag_documents(session: Session | scoped_session[Session]) -> dict[str, dict[str, Any]]:
    """Every stored flag document by key (segments read it to refuse deleting a segment in use)."""
    return {doc["key"]: doc for doc in session.scalars(select(flags_table.c.document))}


class FlagStore:
    def __init__(self, session: Session | scoped_session[Session], environments: Iterable[str]) -> None:
        self.session = session
        self.environments = list(environments)
        self.environment_store = EnvironmentStore(session, self.environments)

    def list_flags(self) -> list[dict[str, Any]]:
        rows = self.session.execute(select(flags_table.c.document, flags_table.c.version).order_by(flags_table.c.key))
        return [{**document, "version": version} for document, version in rows]

    def get_flag(self, key: str) -> dict[str, Any]:
        row = self.session.execute(
            select(flags_table.c.document, flags_table.c.version).where(flags_table.c.key == key)
        ).first()
        if row is None:
            raise FlagNotFound(key)
        return {**row.document, "version": row.version}

    def _segment_keys(self) -> dict[str, list[str]]:
        keys: dict[str, list[str]] = {}
        for env, key in self.session.execute(select(segments_table.c.environment, segments_table.c.key)):
            keys.setdefault(env, []).append(key)
        return keys

    def _validate_flag(self, document: Mapping[str, Any], key: str | None = None) -> dict[str, Any]:
        if key is not None:
            document = {**document, "key": document.get("key") or key}
            if document["key"] != key:
                raise InvalidDocument({"key": "cannot be changed; create a new flag instead"})
        doc = validate_flag(document, self.environments, segment_keys=self._segment_keys())
        others = flag_documents(self.session)
        others[doc["key"]] = doc
        for env in self.environments:
            for index, prerequisite in enumerate(doc["environments"][env]["prerequisites"]):
                path = f"environments.{env}.prerequisites[{index}]"
                required = others.get(prerequisite["flag"])
                if required is None:
                    raise InvalidDocument({f"{path}.flag": "no such flag"})
                if prerequisite["variant"] not in required["variants"]:
                    raise InvalidDocument({f"{path}.variant": f"not a variant of {prerequisite['flag']}"})
            cycle = prerequisite_cycle(others, env)
            if cycle:
                raise InvalidDocument(
                    {f"environments.{env}.prerequisites": f"prerequisite cycle: {' -> '.join(cycle)}"}
                )
        return doc

    def _record(self, key: str, version: int, action: str, actor: str, document: dict[str, Any] | None) -> None:
        self.session.execute(
            insert(flag_versions_table).values(
                key=key, version=version, action=action, actor=actor, document=document, created_at=utc_now()
            )
        )

    def _touched(self, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[str]:
        return [
            env
            for env in self.environments
            if (before and compile_flag(before, env)) != (after and compile_flag(after, env))
        ]

    def create_flag(self, document: Mapping[str, Any], actor: str) -> Change:
        doc = self._validate_flag(document)
        key = doc["key"]
        if self.session.scalar(select(flags_table.c.key).where(flags_table.c.key == key)) is not None:
            raise AlreadyExists(key)
        # A re-created flag continues its history (and keeps its salt, so users keep their buckets).
        last = self.session.scalar(
            select(func.max(flag_versions_table.c.version)).where(flag_versions_table.c.key == key)
        )
        version = (last or 0) + 1
        now = utc_now()
        self.session.execute(
            insert(flags_table).values(key=key, version=version, document=doc, created_at=now, updated_at=now)
        )
        self._record(key, version, "create", actor, doc)
        return Change(key, version, None, doc, self.environment_store.bump(self._touched(None, doc)))

    def update_flag(
        self,
        key: str,
        document: Mapping[str, Any],
        actor: str,
        *,
        expected_version: int | None,
        action: str = "update",
    ) -> Change:
        current = self.get_flag(key)
        if expected_version is not None and expected_version != current["version"]:
            raise StaleVersion(current["version"])
        before = {k: v for k, v in current.items() if k != "version"}
        doc = self._validate_flag(document, key)
        version = current["version"] + 1
        result = self.session.execute(
            update(flags_table)
            .where(flags_table.c.key == key, flags_table.c.version == current["version"])
            .values(version=version, document=doc, updated_at=utc_now())
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise StaleVersion(None)  # another writer committed between our read and write
        self._record(key, version, action, actor, doc)
        return Change(key, version, before, doc, self.environment_store.bump(self._touched(before, doc)))

    def patch_environment(
        self,
        key: str,
        environment: str,
        changes: Mapping[str, Any],
        actor: str,
        *,
        expected_version: int | None,
        action: str,
    ) -> Change:
        """Change one environment's state (toggle, rollout) as a full-document update."""
        current = self.get_flag(key)
        if environment not in self.environments:
            raise FlagNotFound(f"environment {environment}")
        doc = json.loads(json.dumps(current))
        doc["environments"][environment] = {**state_of(doc, environment), **changes}
        return self.update_flag(key, doc, actor, expected_version=expected_version, action=action)

    def delete_flag(self, key: str, actor: str, *, expected_version: int | None) -> Change:
        current = self.get_flag(key)
        if expected_version is not None and expected_version != current["version"]:
            raise StaleVersion(current["version"])
        dependants = sorted(
            other["key"]
            for other in flag_documents(self.session).values()
            for env in self.environments
            if any(p["flag"] == key for p in state_of(other, env)["prerequisites"])
        )
        if dependants:
            raise InUse(f"required by {', '.join(dict.fromkeys(dependants))}")
        before = {k: v for k, v in current.items() if k != "version"}
        result = self.session.execute(
            flags_table.delete().where(flags_table.c.key == key, flags_table.c.version == current["version"])
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise StaleVersion(None)
        version = current["version"] + 1
        self._record(key, version, "delete", actor, None)
        return Change(key, version, before, None, self.environment_store.bump(self._touched(before, None)))

    def history(self, key: str) -> list[dict[str, Any]]:
        rows = self.session.execute(
            select(flag_versions_table).where(flag_versions_table.c.key == key).order_by(flag_versions_table.c.version)
        ).all()
        if not rows:
            raise FlagNotFound(key)
        entries = []
        previous: dict[str, Any] | None = None
        for row in rows:
            entries.append(
                {
                    "version": row.version,
                    "action": row.action,
                    "actor": row.actor,
                    "createdAt": row.created_at.isoformat() if row.created_at else None,
                    "changes": diff(previous, row.document),
                }
            )
            previous = row.document
        return entries[::-1]

    def version_document(self, key: str, version: int) -> dict[str, Any]:
        document = self.session.scalar(
            select(flag_versions_table.c.document).where(
                flag_versions_table.c.key == key, flag_versions_table.c.version == version
            )
        )
        if document is None:
            raise FlagNotFound(f"{key} version {version}")
        return dict(document)

    def rollback(self, key: str, version: int, actor: str, *, expected_version: int | None) -> Change:
        """Write the document of ``version`` as a new version (history is never rewritten)."""
        return self.update_flag(
            key,
            self.version_document(key, version),
            actor,
            expected_version=expected_version,
            action="rollback",
        )
