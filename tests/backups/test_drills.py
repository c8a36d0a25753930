"""Scheduled backups and restore drills through the kit's job runner, their records and their metrics."""

from __future__ import annotations

import time

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from backups.cli import MIGRATIONS
from backups.postgres import PostgresStore
from backups.records import Base
from backups.service import create_app, run_drill
from backups.settings import BackupSettings
from service_kit.db import make_engine, upgrade
from tests.backups.conftest import SettingsFactory
from tests.servers import SeaweedS3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def service_app(settings: BackupSettings) -> Flask:
    """The service as `serve` runs it (migrated first), without its runner thread: the test runs the jobs."""
    upgrade(make_engine(settings.database.url), MIGRATIONS, Base.metadata)
    return create_app(settings, start_jobs=False)


def scrape(app: Flask, store: str = "tickets") -> dict[str, float]:
    """``name{store=...}`` -> value, from the app's /metrics."""
    body = app.test_client().get("/metrics").get_data(as_text=True)
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.labels.get("store") == store
    }


def test_scheduled_backups_and_drill_prove_recovery_and_metrics_are_fresh(
    archived_store: PostgresStore, backup_settings: SettingsFactory
) -> None:
    app = service_app(backup_settings())
    jobs = app.extensions["jobs"]
    assert sorted(jobs.jobs) == ["drill_tickets", "full_tickets", "incr_tickets"]

    jobs.run_due()  # all three are due on first start: full, then incr, then the drill

    metrics = scrape(app)
    now = time.time()
    assert now - metrics["backup_last_success_timestamp_seconds"] < 60
    assert metrics["backup_size_bytes"] > 1_000_000  # an initdb'd cluster is ~20 MB
    assert now - metrics["restore_drill_last_success_timestamp_seconds"] < 60
    assert 0 < metrics["restore_drill_duration_seconds"] < 120
    assert "restore_drill_last_failure_timestamp_seconds" not in metrics
    assert metrics["recovery_point_age_seconds"] < 60
    assert metrics["backup_wal_archive_failures_total"] == 0


def test_drill_fails_loudly_when_an_archived_wal_segment_is_missing(
    archived_store: PostgresStore, backup_settings: SettingsFactory, s3_server: SeaweedS3Server
) -> None:
    """The base backup still restores and starts; only the sentinel row shows that WAL was lost."""
    store = archived_store
    store.backup("full")
    with store.connect() as connection:
        connection.execute("CREATE TABLE after_backup (id int)")
    store.wait_for_archive()
    with store.connect() as connection:
        row = connection.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
    assert row is not None
    client = s3_server.client()
    prefix = store.settings.s3.prefix.lstrip("/") + "/archive/tickets/"
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix)["Contents"]]
    lost = [key for key in keys if key.rsplit("/", 1)[-1].startswith(row[0])]
    assert len(lost) == 1
    client.delete_object(Bucket=s3_server.bucket, Key=lost[0])

    app = service_app(backup_settings())
    with app.extensions["database"].new_session() as session:
        run = run_drill(store, session)
        session.commit()
    assert run.ok is False
    assert "sentinel row" in run.detail
    metrics = scrape(app)
    assert time.time() - metrics["restore_drill_last_failure_timestamp_seconds"] < 60
    assert "restore_drill_last_success_timestamp_seconds" not in metrics
