"""The stores on a real SQLite file and a real PostgreSQL: versions, history, rollback, concurrency,
snapshots, segments, SDK keys, staleness."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.orm import Session

from flags_service.app import MIGRATIONS
from flags_service.model import InvalidDocument
from flags_service.storage.environments import EnvironmentStore
from flags_service.storage.errors import InUse, StaleVersion
from flags_service.storage.evaluation_stats import EvaluationStatsStore
from flags_service.storage.flags import FlagStore
from flags_service.storage.sdk_keys import SdkKeyStore
from flags_service.storage.segments import SegmentStore
from flags_service.storage.tables import metadata
from service_kit.db import make_engine, upgrade

ENVIRONMENTS = ("development", "staging", "production")


@dataclass
class Stores:
    """Every aggregate's store over one session, as a request sees them."""

    session: Session
    flags: FlagStore
    segments: SegmentStore
    environments: EnvironmentStore
    sdk_keys: SdkKeyStore
    stats: EvaluationStatsStore

    @classmethod
    def over(cls, session: Session, environments: tuple[str, ...] | list[str]) -> Stores:
        return cls(
            session,
            FlagStore(session, environments),
            SegmentStore(session, environments),
            EnvironmentStore(session, environments),
            SdkKeyStore(session, environments),
            EvaluationStatsStore(session),
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """The same behaviour suite on SQLite and on a real PostgreSQL, both migrated by Alembic."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'flags.db'}"
    else:
        url = request.getfixturevalue("postgres_server").fresh_database("flags_storage_test")
    engine = make_engine(url)
    upgrade(engine, MIGRATIONS, metadata)
    with Session(engine) as session:
        stores = Stores.over(session, ENVIRONMENTS)
        stores.environments.ensure_environments()
        yield stores
    engine.dispose()


def _flag(key: str = "new-checkout", **changes: Any) -> dict[str, Any]:
    return {"key": key, "variants": {"on": True, "off": False}, "offVariant": "off", **changes}


def test_every_write_makes_a_version_with_a_diff(store: Stores) -> None:
    store.flags.create_flag(_flag(), "alice")
    store.flags.patch_environment(
        "new-checkout", "production", {"enabled": True}, "bob", expected_version=1, action="toggle"
    )
    history = store.flags.history("new-checkout")
    assert [(h["version"], h["action"], h["actor"]) for h in history] == [
        (2, "toggle", "bob"),
        (1, "create", "alice"),
    ]
    assert history[0]["changes"] == [{"path": "environments.production.enabled", "before": False, "after": True}]


def test_stale_if_match_is_refused_and_nothing_is_lost(store: Stores) -> None:
    store.flags.create_flag(_flag(), "alice")
    store.flags.patch_environment(
        "new-checkout", "staging", {"enabled": True}, "a", expected_version=1, action="toggle"
    )
    with pytest.raises(StaleVersion) as caught:
        store.flags.patch_environment(
            "new-checkout", "production", {"enabled": True}, "b", expected_version=1, action="t"
        )
    assert caught.value.current == 2
    flag = store.flags.get_flag("new-checkout")
    assert flag["environments"]["staging"]["enabled"] is True
    assert flag["environments"]["production"]["enabled"] is False


def test_rollback_writes_the_old_document_as_a_new_version(store: Stores) -> None:
    store.flags.create_flag(_flag(), "alice")
    store.flags.patch_environment(
        "new-checkout", "production", {"enabled": True}, "a", expected_version=None, action="t"
    )
    change = store.flags.rollback("new-checkout", 1, "carol", expected_version=2)
    assert change.version == 3
    assert store.flags.get_flag("new-checkout")["environments"]["production"]["enabled"] is False
    assert store.flags.history("new-checkout")[0]["action"] == "rollback"


def test_environment_versions_move_only_where_the_served_flag_changed(store: Stores) -> None:
    store.flags.create_flag(_flag(), "alice")
    before = store.environments.versions()
    change = store.flags.patch_environment(
        "new-checkout", "staging", {"enabled": True}, "a", expected_version=None, action="t"
    )
    after = store.environments.versions()
    assert change.environments == {"staging": before["staging"] + 1}
    assert after["production"] == before["production"]
    assert store.environments.snapshot("staging")["version"] == after["staging"]


def test_prerequisite_cycle_is_refused_naming_the_field(store: Stores) -> None:
    store.flags.create_flag(_flag("a"), "x")
    store.flags.create_flag(
        _flag("b", environments={"production": {"prerequisites": [{"flag": "a", "variant": "on"}]}}), "x"
    )
    with pytest.raises(InvalidDocument) as caught:
        store.flags.patch_environment(
            "a",
            "production",
            {"prerequisites": [{"flag": "b", "variant": "on"}]},
            "x",
            expected_version=None,
            action="u",
        )
    assert caught.value.details == {"environments.production.prerequisites": "prerequisite cycle: a -> b -> a"}
    with pytest.raises(InvalidDocument) as missing:
        store.flags.create_flag(
            _flag("c", environments={"staging": {"prerequisites": [{"flag": "zz", "variant": "on"}]}}), "x"
        )
    assert "environments.staging.prerequisites[0].flag" in missing.value.details
    with pytest.raises(InUse):
        store.flags.delete_flag("a", "x", expected_version=None)


def test_segments_are_per_environment_and_cannot_be_deleted_while_used(store: Stores) -> None:
    store.segments.put_segment("production", {"key": "beta", "included": ["u1"]}, expected_version=None)
    rule = {"clauses": [{"op": "segmentMatch", "values": ["beta"]}], "serve": {"variant": "on"}}
    store.flags.create_flag(_flag(environments={"production": {"enabled": True, "rules": [rule]}}), "x")
    with pytest.raises(InvalidDocument):
        store.flags.create_flag(_flag("other", environments={"staging": {"rules": [rule]}}), "x")
    with pytest.raises(InUse):
        store.segments.delete_segment("production", "beta", expected_version=None)
    snapshot = store.environments.snapshot("production")
    assert snapshot["segments"]["beta"]["included"] == ["u1"]
    assert snapshot["flags"]["new-checkout"]["rules"][0]["id"] == "rule-1"


def test_sdk_keys_are_stored_hashed_and_can_be_revoked(store: Stores) -> None:
    key, token = store.sdk_keys.create_sdk_key("production", "client", "web app")
    assert token not in str(store.sdk_keys.list_sdk_keys())
    found = store.sdk_keys.find_sdk_key(token)
    assert found is not None
    assert (found.environment, found.kind) == ("production", "client")
    store.sdk_keys.revoke_sdk_key(key.id)
    assert store.sdk_keys.find_sdk_key(token) is None
    with pytest.raises(InvalidDocument) as caught:
        store.sdk_keys.create_sdk_key("qa", "server", "for an environment not configured")
    assert set(caught.value.details) == {"environment"}


def test_stale_flags_by_expiry_and_by_last_evaluation(store: Stores) -> None:
    now = dt.datetime.now(dt.UTC)
    store.flags.create_flag(_flag("expired", expiresAt="2020-01-01T00:00:00Z", kind="ops"), "x")
    store.flags.create_flag(_flag("old-release"), "x")
    store.flags.create_flag(_flag("kill-switch", kind="ops"), "x")
    store.flags.create_flag(_flag("fresh"), "x")
    store.stats.record_evaluations(
        "production", {"old-release": 3, "fresh": 5, "unknown": 9}, at=now - dt.timedelta(days=40)
    )
    store.stats.record_evaluations("production", {"fresh": 1}, at=now)
    stale = {f["key"]: f["reason"] for f in store.stats.stale_flags("production", stale_after_days=30, now=now)}
    assert stale == {"expired": "expired", "old-release": "not-evaluated-recently"}
    later = now + dt.timedelta(days=31)
    staging = {f["key"]: f["reason"] for f in store.stats.stale_flags("staging", stale_after_days=30, now=later)}
    assert staging == {"expired": "expired", "old-release": "never-evaluated", "fresh": "never-evaluated"}


def test_an_environment_added_later_serves_existing_flags_off(store: Stores) -> None:
    store.flags.create_flag(_flag(environments={"production": {"enabled": True}}), "x")
    grown = Stores.over(store.session, [*ENVIRONMENTS, "qa"])
    grown.environments.ensure_environments()
    flag = grown.environments.snapshot("qa")["flags"]["new-checkout"]
    assert (flag["enabled"], flag["fallthrough"]) == (False, {"variant": "off"})
    grown.flags.patch_environment("new-checkout", "qa", {"enabled": True}, "x", expected_version=None, action="t")
    assert grown.environments.snapshot("qa")["flags"]["new-checkout"]["enabled"] is True


def test_migrations_create_exactly_the_tables_the_stores_use(tmp_path: Path) -> None:
    """flags_0002 (changed_at) included: the migrations and flags_service.storage.tables agree."""
    engine = make_engine(f"sqlite:///{tmp_path / 'migrated.sqlite3'}")
    upgrade(engine, MIGRATIONS, metadata)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_name": lambda name, kind, _: kind != "table" or name in metadata.tables}
        )
        assert compare_metadata(context, metadata) == []
    engine.dispose()
