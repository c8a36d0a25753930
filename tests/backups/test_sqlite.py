"""SQLite stores through Litestream and a real S3 server (SeaweedFS, TLS): point-in-time restore, scheduled
sync and drill with fresh metrics, and a lost LTX file found by the next drill."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import threading
import time
from datetime import UTC, datetime

import pytest

from backups.litestream import SqliteStore
from backups.records import BackupRun
from backups.service import run_drill
from tests.backups.conftest import Replicated
from tests.backups.test_cli import CLI
from tests.backups.test_drills import scrape, service_app
from tests.servers import SeaweedS3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def insert_rows(store: SqliteStore, ids: range) -> None:
    """One transaction per row, as the desk commits them."""
    with store.connect() as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, note TEXT)")
        for row_id in ids:
            connection.execute("INSERT INTO orders VALUES (?, 'committed')", (row_id,))


def test_restore_to_a_point_in_time_brings_back_exactly_the_rows_committed_before_it(
    replicated: Replicated,
) -> None:
    store = SqliteStore("tickets", replicated.settings())
    insert_rows(store, range(1, 6))
    store.sync()  # rows 1-5 are in the replica
    time.sleep(1.0)  # LTX times are listed to the second: keep the target clear of both syncs
    target = datetime.fromtimestamp(math.floor(time.time()), UTC)
    time.sleep(1.2)
    insert_rows(store, range(6, 11))  # after the target: must not come back
    store.sync()

    replicated.stop()
    for suffix in ("", "-wal", "-shm"):
        store.path.with_name(store.path.name + suffix).unlink(missing_ok=True)  # the disk is gone

    plan = store.plan_restore(target)
    assert plan.point.shipped_at <= target
    store.restore(plan)

    with store.connect() as connection:
        ids = [row[0] for row in connection.execute("SELECT id FROM orders ORDER BY id")]
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert ids == list(range(1, 6))


def test_scheduled_sync_and_drill_prove_recovery_and_metrics_are_fresh(replicated: Replicated) -> None:
    app = service_app(replicated.settings())
    jobs = app.extensions["jobs"]
    assert sorted(jobs.jobs) == ["drill_tickets", "sync_tickets"]
    insert_rows(SqliteStore("tickets", replicated.settings()), range(1, 100))

    jobs.run_due()

    metrics = scrape(app)
    now = time.time()
    assert now - metrics["backup_last_success_timestamp_seconds"] < 60
    assert metrics["backup_size_bytes"] > 4096
    assert now - metrics["restore_drill_last_success_timestamp_seconds"] < 60
    assert 0 < metrics["restore_drill_duration_seconds"] < 60
    assert "restore_drill_last_failure_timestamp_seconds" not in metrics
    assert metrics["recovery_point_age_seconds"] <= 10  # the RPO goal for SQLite


def test_drill_fails_loudly_when_an_ltx_file_in_the_middle_of_the_replica_is_lost(
    replicated: Replicated, s3_server: SeaweedS3Server
) -> None:
    """A gap in the replica's transactions: the snapshot still restores, but not up to the sentinel row."""
    settings = replicated.settings()
    store = SqliteStore("tickets", settings)
    shipped = []
    for batch in (range(1, 20), range(20, 40), range(40, 50)):
        insert_rows(store, batch)
        shipped.append(store.sync().max_txid)  # one transaction in the replica per batch
    # The replicator compacts level 0 into higher levels on its own clock (every 30 s at level 1), so the
    # lost transaction is deleted from every level holding it; snapshots (level 9) predate these batches.
    client = s3_server.client()
    replica = f"{settings.s3.prefix.strip('/')}/sqlite/tickets/"
    listed = client.list_objects_v2(Bucket=s3_server.bucket, Prefix=replica)["Contents"]
    lost = [item["Key"] for item in listed if _holds(item["Key"].removeprefix(replica), shipped[1])]
    assert any(key.startswith(f"{replica}0000/") for key in lost), lost
    for key in lost:
        client.delete_object(Bucket=s3_server.bucket, Key=key)

    app = service_app(settings)
    with app.extensions["database"].new_session() as session:
        run: BackupRun = run_drill(store, session)
        session.commit()
    assert run.ok is False
    assert "non-contiguous" in run.detail  # Litestream names the gap
    metrics = scrape(app)
    assert time.time() - metrics["restore_drill_last_failure_timestamp_seconds"] < 60
    assert "restore_drill_last_success_timestamp_seconds" not in metrics
    with sqlite3.connect(store.path) as connection:  # the live database was never touched
        assert connection.execute("SELECT count(*) FROM orders").fetchone() == (49,)


def _holds(name: str, txid: int) -> bool:
    """Whether ``<level>/<min txid>-<max txid>.ltx`` below a snapshot level holds transaction ``txid``."""
    level, _, file = name.partition("/")
    low, _, high = file.removesuffix(".ltx").partition("-")
    return int(level, 16) < 9 and int(low, 16) <= txid <= int(high, 16)


def test_cli_lists_the_replica_and_a_dry_run_restore_changes_nothing(replicated: Replicated) -> None:
    store = SqliteStore("tickets", replicated.settings())
    insert_rows(store, range(1, 10))
    newest = store.sync()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *args], capture_output=True, text=True, env=replicated.environ, timeout=60)

    listed = cli("list", "--store", "tickets")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()[1:]]
    assert [row[2] for row in rows] == ["snapshot", "latest"]
    assert rows[-1][1] == f"txid-{newest.max_txid:x}"

    dry = cli("restore", "--store", "tickets", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"from: replica txid {newest.max_txid:x}" in dry.stdout
    assert "dry run: nothing changed" in dry.stdout
    assert not list(store.path.parent.glob("*.before-restore-*"))

    too_early = cli("restore", "--store", "tickets", "--to", "2020-01-01T00:00:00Z")
    assert too_early.returncode == 1
    assert "no replicated transaction shipped before 2020-01-01T00:00:00+00:00" in too_early.stderr


def test_listing_the_replica_while_another_caller_rewrites_the_config_never_reads_half_a_file(
    replicated: Replicated,
) -> None:
    """Every litestream call rewrites litestream.yml first, and a scrape lists the replica while a job runs:
    written in place, the config could be read half-written ("database not found in config"), which failed
    a drill of `make up` the moment its metrics were scraped."""
    store = SqliteStore("tickets", replicated.settings())
    insert_rows(store, range(1, 3))
    store.sync()
    stop = threading.Event()

    def rewrite() -> None:
        while not stop.is_set():
            store.tool.write_config()

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        for _ in range(20):
            assert store.list()
    finally:
        stop.set()
        writer.join()
