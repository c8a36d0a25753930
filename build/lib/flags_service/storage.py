"""Flag storage in SQL (SQLite by default, PostgreSQL works): versions, history, snapshots, SDK keys.

Every write bumps the flag's version (optimistic concurrency: ``UPDATE ... WHERE version = :expected``)
and appends the full document to ``flags_flag_versions``, so history, diffs and rollback need no other
bookkeeping. Each environment has a snapshot version that moves only when something it serves changed;
SDKs and the OFREP bulk ETag key off it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session, scoped_session

from flags_service.model import (
    InvalidDocument,
    compile_flag,
    compile_segment,
    diff,
    prerequisite_cycle,
    validate_flag,
    validate_segment,
)

metadata = MetaData()

environments_table = Table(
    "flags_environments",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
)
flags_table = Table(
    "flags_flags",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("document", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
flag_versions_table = Table(
    "flags_flag_versions",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("action", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("document", JSON, nullable=True),  # null: the flag was deleted at this version
    Column("created_at", DateTime(timezone=True), nullable=False),
)
segments_table = Table(
    "flags_segments",
    metadata,
    Column("environment", String(64), primary_key=True),
    Column("key", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("document", JSON, nullable=False),
)
sdk_keys_table = Table(
    "flags_sdk_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("environment", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)
evaluation_stats_table = Table(
    "flags_evaluation_stats",
    metadata,
    Column("environment", String(64), primary_key=True),
    Column("flag_key", String(100), primary_key=True),
    Column("evaluations", Integer, nullable=False),
    Column("last_evaluated_at", DateTime(timezone=True), nullable=False),
)

SDK_KEY_KINDS = ("server", "client")


class FlagNotFound(LookupError):
    """No flag (or segment, or version) by that key."""


class StaleVersion(Exception):
    """The caller's If-Match version is not the current one."""

    def __init__(self, current: int | None) -> None:
        super().__init__(f"current version is {current}")
        self.current = current


class AlreadyExists(Exception):
    """A flag or segment with that key exists."""


class InUse(Exception):
    """Deleting would break other flags (prerequisites or segment references)."""


@dataclass(frozen=True)
class SdkKey:
    id: int
    environment: str
    kind: str
    name: str


@dataclass(frozen=True)
class Change:
    """What a write did: the new version, the documents before/after and the environments it touched."""

    key: str
    version: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    environments: dict[str, int]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class FlagStore:
    """All flag persistence over one SQLAlchemy session; the caller commits or rolls back."""

    def __init__(
        self, session: Session | scoped_session[Session], environments: Iterable[str], tiers: Iterable[str] = ()
    ) -> None:
        self.session = session
        self.environments = list(environments)
        self.tiers = list(tiers)

    # -- environments ---------------------------------------------------------------------------
    def ensure_environments(self) -> None:
        existing = set(self.session.scalars(select(environments_table.c.name)))
        for name in self.environments:
            if name not in existing:
                self.session.execute(insert(environments_table).values(name=name, version=1))

    def environment_versions(self) -> dict[str, int]:
        rows = self.session.execute(select(environments_table.c.name, environments_table.c.version))
        return {name: version for name, version in rows if name in self.environments}

    def _bump(self, names: Iterable[str]) -> dict[str, int]:
        bumped: dict[str, int] = {}
        for name in sorted(set(names)):
            self.session.execute(
                update(environments_table)
                .where(environments_table.c.name == name)
                .values(version=environments_table.c.version + 1)
            )
            bumped[name] = self.session.execute(
                select(environments_table.c.version).where(environments_table.c.name == name)
            ).scalar_one()
        return bumped

    # -- flags ----------------------------------------------------------------------------------
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

    def _documents(self) -> dict[str, dict[str, Any]]:
        return {doc["key"]: doc for doc in self.session.scalars(select(flags_table.c.document))}

    def _segment_keys(self) -> dict[str, list[str]]:
        keys: dict[str, list[str]] = {}
        for env, key in self.session.execute(select(segments_table.c.environment, segments_table.c.key)):
            keys.setdefault(env, []).append(key)
        return keys

    def _validate_flag(self, document: object, key: str | None = None) -> dict[str, Any]:
        if key is not None and isinstance(document, dict):
            document = {**document, "key": document.get("key", key)}
            if document["key"] != key:
                raise InvalidDocument({"key": "cannot be changed; create a new flag instead"})
        doc = validate_flag(document, self.environments, tiers=self.tiers, segment_keys=self._segment_keys())
        others = self._documents()
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
                key=key, version=version, action=action, actor=actor, document=document, created_at=_now()
            )
        )

    def _touched(self, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[str]:
        return [
            env
            for env in self.environments
            if (before and compile_flag(before, env)) != (after and compile_flag(after, env))
        ]

    def create_flag(self, document: object, actor: str) -> Change:
        doc = self._validate_flag(document)
        key = doc["key"]
        if self.session.scalar(select(flags_table.c.key).where(flags_table.c.key == key)) is not None:
            raise AlreadyExists(key)
        # A re-created flag continues its history (and keeps its salt, so users keep their buckets).
        last = self.session.scalar(
            select(func.max(flag_versions_table.c.version)).where(flag_versions_table.c.key == key)
        )
        version = (last or 0) + 1
        now = _now()
        self.session.execute(
            insert(flags_table).values(key=key, version=version, document=doc, created_at=now, updated_at=now)
        )
        self._record(key, version, "create", actor, doc)
        return Change(key, version, None, doc, self._bump(self._touched(None, doc)))

    def update_flag(
        self, key: str, document: object, actor: str, *, expected_version: int | None, action: str = "update"
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
            .values(version=version, document=doc, updated_at=_now())
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise StaleVersion(None)  # another writer committed between our read and write
        self._record(key, version, action, actor, doc)
        return Change(key, version, before, doc, self._bump(self._touched(before, doc)))

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
            raise InvalidDocument({"environment": f"unknown environment (known: {', '.join(self.environments)})"})
        doc = json.loads(json.dumps(current))
        doc["environments"][environment].update(changes)
        return self.update_flag(key, doc, actor, expected_version=expected_version, action=action)

    def delete_flag(self, key: str, actor: str, *, expected_version: int | None) -> Change:
        current = self.get_flag(key)
        if expected_version is not None and expected_version != current["version"]:
            raise StaleVersion(current["version"])
        dependants = sorted(
            other["key"]
            for other in self._documents().values()
            for env in self.environments
            if any(p["flag"] == key for p in other["environments"][env]["prerequisites"])
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
        return Change(key, version, before, None, self._bump(self._touched(before, None)))

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

    # -- segments -------------------------------------------------------------------------------
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
        self, environment: str, document: object, *, expected_version: int | None, key: str | None = None
    ) -> Change:
        if environment not in self.environments:
            raise FlagNotFound(f"environment {environment}")
        if key is not None and isinstance(document, dict):
            document = {**document, "key": document.get("key", key)}
            if document["key"] != key:
                raise InvalidDocument({"key": "cannot be changed"})
        doc = validate_segment(document, tiers=self.tiers)
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
        return Change(doc["key"], version, before, doc, self._bump([environment]))

    def delete_segment(self, environment: str, key: str, *, expected_version: int | None) -> Change:
        current = self.get_segment(environment, key)
        if expected_version is not None and current["version"] != expected_version:
            raise StaleVersion(current["version"])
        users = [
            doc["key"]
            for doc in self._documents().values()
            for rule in doc["environments"][environment]["rules"]
            for clause in rule["clauses"]
            if clause["op"] == "segmentMatch" and key in clause["values"]
        ]
        if users:
            raise InUse(f"used by {', '.join(dict.fromkeys(users))}")
        self.session.execute(
            segments_table.delete().where(segments_table.c.environment == environment, segments_table.c.key == key)
        )
        before = {k: v for k, v in current.items() if k not in ("version", "environment")}
        return Change(key, current["version"] + 1, before, None, self._bump([environment]))

    # -- snapshots ------------------------------------------------------------------------------
    def snapshot(self, environment: str) -> dict[str, Any]:
        """Everything an SDK needs to evaluate locally in ``environment``, with its version."""
        version = self.session.scalar(
            select(environments_table.c.version).where(environments_table.c.name == environment)
        )
        if version is None:
            raise FlagNotFound(f"environment {environment}")
        return {
            "environment": environment,
            "version": version,
            "flags": {doc["key"]: compile_flag(doc, environment) for doc in self._documents().values()},
            "segments": {
                doc["key"]: compile_segment(doc)
                for doc in self.session.scalars(
                    select(segments_table.c.document).where(segments_table.c.environment == environment)
                )
            },
        }

    # -- SDK keys -------------------------------------------------------------------------------
    def create_sdk_key(self, environment: str, kind: str, name: str) -> tuple[SdkKey, str]:
        """A new key; the token is returned once and only its SHA-256 is stored."""
        errors = {}
        if environment not in self.environments:
            errors["environment"] = f"must be one of {', '.join(self.environments)}"
        if kind not in SDK_KEY_KINDS:
            errors["kind"] = f"must be one of {', '.join(SDK_KEY_KINDS)}"
        if not isinstance(name, str) or not name or len(name) > 200:
            errors["name"] = "must be a non-empty string of at most 200 characters"
        if errors:
            raise InvalidDocument(errors)
        token = f"fsk_{kind[:3]}_{environment[:4]}_{secrets.token_urlsafe(24)}"
        key_id = self.session.execute(  # type: ignore[attr-defined]
            insert(sdk_keys_table).values(
                environment=environment,
                kind=kind,
                name=name,
                token_sha256=hash_token(token),
                created_at=_now(),
            )
        ).inserted_primary_key[0]
        return SdkKey(int(key_id), environment, kind, name), token

    def find_sdk_key(self, token: str) -> SdkKey | None:
        row = self.session.execute(
            select(sdk_keys_table).where(
                sdk_keys_table.c.token_sha256 == hash_token(token), sdk_keys_table.c.revoked_at.is_(None)
            )
        ).first()
        return None if row is None else SdkKey(row.id, row.environment, row.kind, row.name)

    def list_sdk_keys(self) -> list[dict[str, Any]]:
        rows = self.session.execute(select(sdk_keys_table).order_by(sdk_keys_table.c.id))
        return [
            {
                "id": row.id,
                "environment": row.environment,
                "kind": row.kind,
                "name": row.name,
                "createdAt": row.created_at.isoformat(),
                "revoked": row.revoked_at is not None,
            }
            for row in rows
        ]

    def revoke_sdk_key(self, key_id: int) -> None:
        result = self.session.execute(
            update(sdk_keys_table).where(sdk_keys_table.c.id == key_id).values(revoked_at=_now())
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise FlagNotFound(f"sdk key {key_id}")

    # -- evaluation statistics and staleness -----------------------------------------------------
    def record_evaluations(self, environment: str, counts: Mapping[str, int], at: dt.datetime | None = None) -> None:
        at = at or _now()
        known = set(self.session.scalars(select(flags_table.c.key).where(flags_table.c.key.in_(list(counts)))))
        for key in sorted(known):
            result = self.session.execute(
                update(evaluation_stats_table)
                .where(
                    evaluation_stats_table.c.environment == environment,
                    evaluation_stats_table.c.flag_key == key,
                )
                .values(evaluations=evaluation_stats_table.c.evaluations + counts[key], last_evaluated_at=at)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                self.session.execute(
                    insert(evaluation_stats_table).values(
                        environment=environment, flag_key=key, evaluations=counts[key], last_evaluated_at=at
                    )
                )

    def stale_flags(
        self, environment: str, *, stale_after_days: int, now: dt.datetime | None = None
    ) -> list[dict[str, Any]]:
        """Flags past their expiry date, or release/experiment flags not evaluated for ``stale_after_days``
        (ops and permission flags live for as long as the system; they only go stale by expiry)."""
        now = now or _now()
        cutoff = now - dt.timedelta(days=stale_after_days)
        last_seen = {
            key: (_aware(at), count)
            for key, at, count in self.session.execute(
                select(
                    evaluation_stats_table.c.flag_key,
                    evaluation_stats_table.c.last_evaluated_at,
                    evaluation_stats_table.c.evaluations,
                ).where(evaluation_stats_table.c.environment == environment)
            )
        }
        stale = []
        for key, document, created_at in self.session.execute(
            select(flags_table.c.key, flags_table.c.document, flags_table.c.created_at).order_by(flags_table.c.key)
        ):
            seen_at = last_seen.get(key, (None, 0))[0]
            reason = None
            expires = document.get("expiresAt")
            if expires and dt.datetime.fromisoformat(expires.replace("Z", "+00:00")).astimezone(dt.UTC) < now:
                reason = "expired"
            elif document["kind"] in ("release", "experiment"):
                if seen_at is None and _aware(created_at) < cutoff:
                    reason = "never-evaluated"
                elif seen_at is not None and seen_at < cutoff:
                    reason = "not-evaluated-recently"
            if reason:
                stale.append(
                    {
                        "key": key,
                        "kind": document["kind"],
                        "owner": document.get("owner", ""),
                        "reason": reason,
                        "lastEvaluatedAt": seen_at.isoformat() if seen_at else None,
                        "expiresAt": expires,
                    }
                )
        return stale


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands timestamps back naive; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
