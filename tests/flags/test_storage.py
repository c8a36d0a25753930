"""FlagStore on a real SQLite file: versions, history, rollback, concurrency, snapshots, keys, staleness."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from flags_service.model import InvalidDocument
from flags_service.storage import FlagStore, InUse, StaleVersion, metadata

ENVIRONMENTS = ("development", "staging", "production")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlagStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'flags.db'}")
    metadata.create_all(engine)
    with Session(engine) as session:
        flag_store = FlagStore(session, ENVIRONMENTS, tiers=("free", "pro", "enterprise"))
        flag_store.ensure_environments()
        yield flag_store
    engine.dispose()


def _flag(key: str = "new-checkout", **changes: Any) -> dict[str, Any]:
    return {"key": key, "variants": {"on": True, "off": False}, "offVariant": "off", **changes}


def test_every_write_makes_a_version_with_a_diff(store: FlagStore) -> None:
    store.create_flag(_flag(), "alice")
    store.patch_environment("new-checkout", "production", {"enabled": True}, "bob", expected_version=1, action="toggle")
    history = store.history("new-checkout")
    assert [(h["version"], h["action"], h["actor"]) for h in history] == [
        (2, "toggle", "bob"),
        (1, "create", "alice"),
    ]
    assert history[0]["changes"] == [{"path": "environments.production.enabled", "before": False, "after": True}]


def test_stale_if_match_is_refused_and_nothing_is_lost(store: FlagStore) -> None:
    store.create_flag(_flag(), "alice")
    store.patch_environment("new-checkout", "staging", {"enabled": True}, "a", expected_version=1, action="toggle")
    with pytest.raises(StaleVersion) as caught:
        store.patch_environment("new-checkout", "production", {"enabled": True}, "b", expected_version=1, action="t")
    assert caught.value.current == 2
    flag = store.get_flag("new-checkout")
    assert flag["environments"]["staging"]["enabled"] is True
    assert flag["environments"]["production"]["enabled"] is False


def test_rollback_writes_the_old_document_as_a_new_version(store: FlagStore) -> None:
    store.create_flag(_flag(), "alice")
    store.patch_environment("new-checkout", "production", {"enabled": True}, "a", expected_version=None, action="t")
    change = store.rollback("new-checkout", 1, "carol", expected_version=2)
    assert change.version == 3
    assert store.get_flag("new-checkout")["environments"]["production"]["enabled"] is False
    assert store.history("new-checkout")[0]["action"] == "rollback"


def test_environment_versions_move_only_where_the_served_flag_changed(store: FlagStore) -> None:
    store.create_flag(_flag(), "alice")
    before = store.environment_versions()
    change = store.patch_environment(
        "new-checkout", "staging", {"enabled": True}, "a", expected_version=None, action="t"
    )
    after = store.environment_versions()
    assert change.environments == {"staging": before["staging"] + 1}
    assert after["production"] == before["production"]
    assert store.snapshot("staging")["version"] == after["staging"]


def test_prerequisite_cycle_is_refused_naming_the_field(store: FlagStore) -> None:
    store.create_flag(_flag("a"), "x")
    store.create_flag(_flag("b", environments={"production": {"prerequisites": [{"flag": "a", "variant": "on"}]}}), "x")
    with pytest.raises(InvalidDocument) as caught:
        store.patch_environment(
            "a",
            "production",
            {"prerequisites": [{"flag": "b", "variant": "on"}]},
            "x",
            expected_version=None,
            action="u",
        )
    assert caught.value.errors == {"environments.production.prerequisites": "prerequisite cycle: a -> b -> a"}
    with pytest.raises(InvalidDocument) as missing:
        store.create_flag(
            _flag("c", environments={"staging": {"prerequisites": [{"flag": "zz", "variant": "on"}]}}), "x"
        )
    assert "environments.staging.prerequisites[0].flag" in missing.value.errors
    with pytest.raises(InUse):
        store.delete_flag("a", "x", expected_version=None)


def test_segments_are_per_environment_and_cannot_be_deleted_while_used(store: FlagStore) -> None:
    store.put_segment("production", {"key": "beta", "included": ["u1"]}, expected_version=None)
    rule = {"clauses": [{"op": "segmentMatch", "values": ["beta"]}], "serve": {"variant": "on"}}
    store.create_flag(_flag(environments={"production": {"enabled": True, "rules": [rule]}}), "x")
    with pytest.raises(InvalidDocument):
        store.create_flag(_flag("other", environments={"staging": {"rules": [rule]}}), "x")
    with pytest.raises(InUse):
        store.delete_segment("production", "beta", expected_version=None)
    snapshot = store.snapshot("production")
    assert snapshot["segments"]["beta"]["included"] == ["u1"]
    assert snapshot["flags"]["new-checkout"]["rules"][0]["id"] == "rule-1"


def test_sdk_keys_are_stored_hashed_and_can_be_revoked(store: FlagStore) -> None:
    key, token = store.create_sdk_key("production", "client", "web app")
    assert token not in str(store.list_sdk_keys())
    found = store.find_sdk_key(token)
    assert found is not None
    assert (found.environment, found.kind) == ("production", "client")
    store.revoke_sdk_key(key.id)
    assert store.find_sdk_key(token) is None
    with pytest.raises(InvalidDocument) as caught:
        store.create_sdk_key("qa", "admin", "")
    assert set(caught.value.errors) == {"environment", "kind", "name"}


def test_stale_flags_by_expiry_and_by_last_evaluation(store: FlagStore) -> None:
    now = dt.datetime.now(dt.UTC)
    store.create_flag(_flag("expired", expiresAt="2020-01-01T00:00:00Z", kind="ops"), "x")
    store.create_flag(_flag("old-release"), "x")
    store.create_flag(_flag("kill-switch", kind="ops"), "x")
    store.create_flag(_flag("fresh"), "x")
    store.record_evaluations("production", {"old-release": 3, "fresh": 5, "unknown": 9}, at=now - dt.timedelta(days=40))
    store.record_evaluations("production", {"fresh": 1}, at=now)
    stale = {f["key"]: f["reason"] for f in store.stale_flags("production", stale_after_days=30, now=now)}
    assert stale == {"expired": "expired", "old-release": "not-evaluated-recently"}
    later = now + dt.timedelta(days=31)
    staging = {f["key"]: f["reason"] for f in store.stale_flags("staging", stale_after_days=30, now=later)}
    assert staging == {"expired": "expired", "old-release": "never-evaluated", "fresh": "never-evaluated"}
