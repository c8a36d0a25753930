"""Fault injection on real servers: every fault is flagged by the next backup or drill, never healthy.

Each case breaks one thing a real deployment can lose (the object store's data, its keys, its address,
the disk), then runs the job that must notice: its run is recorded as failed and the scraped metrics show
no success, which is what BackupTooOld and RestoreDrillFailed alert on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backups.litestream import SqliteStore
from backups.postgres import PostgresStore
from backups.service import run_backup, run_drill
from tests.backups.conftest import USER, Cluster, Replicated, SettingsFactory
from tests.backups.test_drills import scrape, service_app
from tests.backups.test_sqlite import insert_rows
from tests.servers import SeaweedS3Server, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


MOUNTS: list[Path] = []


@pytest.fixture(autouse=True)
def unmount() -> Iterator[None]:
    yield
    while MOUNTS:
        subprocess.run(["umount", "-l", str(MOUNTS.pop())], check=True)


def small(parent: Path, owner: str | None = None) -> Path:
    """A 256 KiB tmpfs: a real ENOSPC from the kernel (needs root, as mounting does)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = parent / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(mount)], check=True)
    MOUNTS.append(mount)
    if owner:
        shutil.chown(mount, owner)
    return mount


@dataclass(frozen=True)
class Fault:
    """One broken thing: ``s3`` and ``env`` are what the whole deployment (replicator and jobs) is restarted
    with, or the jobs alone (a prefix both use consistently is not a fault: the backups are whole there);
    ``before`` breaks the object store's data; ``small_disk`` puts the jobs' work directory on a full disk."""

    s3: dict[str, object] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    before: Callable[[Replicated, SeaweedS3Server], None] | None = None
    small_disk: bool = False
    replicator: bool = True
    jobs_only: bool = False  # the replicator keeps its right settings: the jobs look in the wrong place


def truncated(replicated: Replicated, s3: SeaweedS3Server) -> None:
    """Half of every LTX file holding the newest transaction (any level), so no whole copy of it is left."""
    client = s3.client()
    prefix = replicated.prefix.strip("/") + "/sqlite/tickets/"
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)["Contents"]]
    newest = max(key.rsplit("-", 1)[-1] for key in keys)
    for key in keys:
        if key.endswith(f"-{newest}"):
            body = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
            client.put_object(Bucket=s3.bucket, Key=key, Body=body[: len(body) // 2])


@pytest.mark.parametrize(
    ("fault", "job", "message"),
    [
        pytest.param(Fault(before=truncated), "drill", "litestream restore", id="truncated-ltx"),
        pytest.param(Fault(env={"BACKUP_S3__SECRET_KEY": "wrong"}), "sync", "litestream ltx", id="credentials"),
        pytest.param(Fault(s3={"bucket": "no-such-bucket"}), "sync", "litestream ltx", id="wrong-bucket"),
        pytest.param(Fault(s3={"prefix": "/elsewhere"}, jobs_only=True), "sync", "replica is empty", id="wrong-prefix"),
        pytest.param(Fault(s3={"port": free_port()}), "sync", "litestream ltx", id="store-unreachable"),
        pytest.param(Fault(small_disk=True), "drill", "litestream restore", id="disk-full"),
        pytest.param(Fault(replicator=False), "sync", "has not taken the write", id="replicator-down"),
    ],
)
def test_sqlite_fault_is_flagged_by_the_next_job(
    replicated: Replicated, s3_server: SeaweedS3Server, tmp_path: Path, fault: Fault, job: str, message: str
) -> None:
    store = SqliteStore("tickets", replicated.settings())
    insert_rows(store, range(1, 5000))
    with store.connect() as connection:
        connection.execute("UPDATE orders SET note = printf('%0200d', id)")  # about 1 MB
    store.sync()

    if fault.before:
        fault.before(replicated, s3_server)  # under the running replicator, as a bad disk or a bad actor would
    restart = (bool(fault.s3 or fault.env) and not fault.jobs_only) or not fault.replicator
    if restart:
        replicated.stop()
    replicated.environ.update(fault.env)
    replicated.replication_timeout = 5  # the wrong-prefix case waits it out
    settings = replicated.settings(fault.s3, small(tmp_path) if fault.small_disk else None)
    if restart and fault.replicator:
        replicated.start()
    app = service_app(settings)
    started = time.monotonic()
    with app.extensions["database"].new_session() as session:
        store = SqliteStore("tickets", settings)
        run = run_drill(store, session) if job == "drill" else run_backup(store, "sync", session)
        session.commit()

    assert run.ok is False
    assert message in run.detail
    assert time.monotonic() - started < 30
    metrics = scrape(app)
    if job == "drill":
        assert time.time() - metrics["restore_drill_last_failure_timestamp_seconds"] < 60
        assert "restore_drill_last_success_timestamp_seconds" not in metrics
    else:
        assert "backup_last_success_timestamp_seconds" not in metrics


def truncated_wal(store: PostgresStore, s3: SeaweedS3Server) -> None:
    """Half of the WAL segment archived last: the drill's restore must replay it."""
    with store.connect() as connection:
        connection.execute("CREATE TABLE after_backup AS SELECT generate_series(1, 10000) AS id")
    store.wait_for_archive()
    client = s3.client()
    prefix = store.settings.s3.prefix.lstrip("/") + "/archive/tickets/"
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)["Contents"]]
    newest = max((key for key in keys if "/0000" in key and key.endswith((".gz", ".zst", ".lz4"))), default=None)
    newest = newest or max(key for key in keys if "-" in key.rsplit("/", 1)[-1])
    body = client.get_object(Bucket=s3.bucket, Key=newest)["Body"].read()
    client.put_object(Bucket=s3.bucket, Key=newest, Body=body[: len(body) // 2])


@pytest.mark.parametrize(
    ("fault", "job", "message"),
    [
        # type: ignore: this table's before takes the PostgreSQL store
        pytest.param(Fault(before=truncated_wal), "drill", "did not come back", id="truncated-wal"),  # type: ignore[arg-type]
        pytest.param(Fault(env={"BACKUP_S3__SECRET_KEY": "wrong"}), "incr", "403 (Forbidden)", id="credentials"),
        pytest.param(Fault(s3={"bucket": "no-such-bucket"}), "incr", "unable to load info file", id="wrong-bucket"),
        pytest.param(Fault(s3={"prefix": "/elsewhere"}), "incr", "info file '/elsewhere/", id="wrong-prefix"),
        # a 1 s io-timeout: pgBackRest retries connecting within it, for each file it reads (41 s at 5 s)
        pytest.param(
            Fault(s3={"port": free_port(), "timeout_seconds": 1}), "incr", "unable to connect", id="store-unreachable"
        ),
        pytest.param(Fault(small_disk=True), "drill", "unable to write", id="disk-full"),
    ],
)
def test_postgres_fault_is_flagged_by_the_next_job(
    archived_store: PostgresStore,
    backup_settings: SettingsFactory,
    s3_server: SeaweedS3Server,
    cluster: Cluster,
    fault: Fault,
    job: str,
    message: str,
) -> None:
    if job == "drill":
        archived_store.backup("full")
    if fault.before:
        fault.before(archived_store, s3_server)  # type: ignore[arg-type]
    settings = backup_settings(fault.s3, fault.env, small(cluster.root, USER) if fault.small_disk else None)
    app = service_app(settings)
    store = PostgresStore("tickets", settings)
    started = time.monotonic()
    with app.extensions["database"].new_session() as session:
        run = run_drill(store, session) if job == "drill" else run_backup(store, job, session)
        session.commit()

    assert run.ok is False
    assert message in run.detail
    assert time.monotonic() - started < 60
    metrics = scrape(app)
    if job == "drill":
        assert time.time() - metrics["restore_drill_last_failure_timestamp_seconds"] < 60
        assert "restore_drill_last_success_timestamp_seconds" not in metrics
    else:
        assert "backup_last_success_timestamp_seconds" not in metrics
