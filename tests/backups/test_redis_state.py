"""Redis stores: what must survive (API keys, bans) is exported and restored to a point in time, on every
topology; the limiter counters are not; a damaged export or an unreachable Redis is a failed run."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from backups.redis_state import RedisStateStore
from backups.service import run_backup
from backups.store import BackupError
from ratelimit_proxy.key_ban_storage import Ban, KeyRecord
from ratelimit_proxy.key_ban_storage import RedisStore as KeyBanStorage
from service_kit.db import current_db
from tests.backups.conftest import SettingsFactory
from tests.backups.test_drills import scrape, service_app
from tests.conftest import RedisUnderTest
from tests.servers import SeaweedS3Server

pytestmark = pytest.mark.integration


def proxy_store(store_settings: SettingsFactory, redis: RedisUnderTest, **fields: object) -> RedisStateStore:
    section = {"url": redis.url, "timeout_seconds": 2, **fields}
    secrets = {
        "BACKUP_REDIS__PROXY__PASSWORD": redis.password,
        "BACKUP_REDIS__PROXY__SENTINEL_PASSWORD": redis.sentinel_password,
    }
    settings = store_settings(
        environ={name: value for name, value in secrets.items() if value}, redis={"proxy": section}
    )
    return RedisStateStore("proxy", settings)


def key(n: int, tier: str = "startup", status: str = "active") -> KeyRecord:
    return KeyRecord(f"{n:064x}", tier, f"owner-{n}@example.com", status, 1_700_000_000.0 + n)


def test_restore_to_a_point_in_time_brings_back_exactly_the_keys_and_bans_of_that_moment(
    store_settings: SettingsFactory, any_redis: RedisUnderTest
) -> None:
    storage = KeyBanStorage(any_redis.client(decode_responses=True))
    store = proxy_store(store_settings, any_redis)
    now = time.time()
    ban = Ban("203.0.113.0/24", "credential stuffing", "manual", now, now + 3600)
    storage.put_key(key(1))
    storage.put_key(key(2, tier="professional"))
    storage.add_ban(ban)
    store.back_up("export")
    target = datetime.now(UTC)
    time.sleep(0.01)
    storage.put_key(key(3))  # after the target: must not come back
    storage.put_key(key(1, status="revoked"))  # changed after the target: comes back active
    storage.remove_ban(ban.network)
    store.back_up("export")

    any_redis.flush()  # the data is gone
    plan = store.plan_restore(target)
    assert plan.point.taken_at <= target
    store.restore(plan)

    assert storage.list_keys() == [key(1), key(2, tier="professional")]
    assert storage.bans(time.time()) == [ban]
    assert [row.type for row in store.listing()] == ["export"] * 3  # the two, plus the one taken before restoring


def test_scheduled_export_and_drill_prove_recovery_and_metrics_are_fresh(
    store_settings: SettingsFactory, redis_url: str
) -> None:
    storage = KeyBanStorage(RedisUnderTest("standalone", redis_url, "", lambda: None).client(decode_responses=True))
    storage.put_key(key(7))
    settings = store_settings(redis={"proxy": {"url": redis_url}})
    app = service_app(settings)
    jobs = app.extensions["jobs"]
    assert sorted(jobs.jobs) == ["drill_proxy", "export_proxy"]

    jobs.run_due()

    metrics = scrape(app, "proxy")
    now = time.time()
    assert now - metrics["backup_last_success_timestamp_seconds"] < 60
    assert now - metrics["restore_drill_last_success_timestamp_seconds"] < 60
    assert 0 < metrics["restore_drill_duration_seconds"] < 60
    assert metrics["recovery_point_age_seconds"] < 60
    assert metrics["backup_recovery_point_objective_seconds"] == 3600  # export_every_seconds, the default
    assert "restore_drill_last_failure_timestamp_seconds" not in metrics


def test_a_damaged_export_is_refused_and_redis_is_left_as_it_was(
    store_settings: SettingsFactory, redis_url: str, s3_server: SeaweedS3Server
) -> None:
    redis = RedisUnderTest("standalone", redis_url, "", lambda: None)
    storage = KeyBanStorage(redis.client(decode_responses=True))
    store = proxy_store(store_settings, redis)
    storage.put_key(key(1))
    store.back_up("export")
    storage.put_key(key(2))
    newest = store.area.documents("")[-1]
    client = s3_server.client()
    body = client.get_object(Bucket=s3_server.bucket, Key=store.area.base + newest.item.key)
    client.put_object(  # truncated, the checksum metadata kept: what a partial upload or bit rot leaves
        Bucket=s3_server.bucket, Key=store.area.base + newest.item.key,
        Body=body["Body"].read()[:-8], Metadata=body["Metadata"],
    )  # fmt: skip

    with pytest.raises(BackupError, match="does not match its checksum"):
        store.restore(store.plan_restore(None))
    assert storage.list_keys() == [key(1), key(2)]


@pytest.mark.parametrize(
    ("fields", "s3", "env", "message"),
    [
        pytest.param({"url": "redis://127.0.0.1:1/0"}, {}, {}, "Redis cannot be read", id="redis-down"),
        pytest.param({}, {"port": 1}, {}, "object store, writing", id="store-unreachable"),
        pytest.param({}, {}, {"BACKUP_S3__SECRET_KEY": "wrong"}, "SignatureDoesNotMatch", id="wrong-keys"),
    ],
)
def test_an_export_that_cannot_be_made_is_a_failed_run(
    store_settings: SettingsFactory,
    redis_url: str,
    fields: dict[str, str],
    s3: dict[str, str],
    env: dict[str, str],
    message: str,
) -> None:
    settings = store_settings(s3=s3, redis={"proxy": {"url": redis_url, "timeout_seconds": 1, **fields}}, environ=env)
    app = service_app(settings)
    with app.app_context(), current_db().new_session() as session:  # the app's database, as the job runner's
        row = run_backup(RedisStateStore("proxy", settings), "export", session)
        session.commit()
        assert not row.ok
        assert message in row.detail
    assert "backup_last_success_timestamp_seconds" not in scrape(app, "proxy")
