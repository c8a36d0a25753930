"""Point-in-time recovery of a PostgreSQL store through pgBackRest and a real S3 server (SeaweedFS, TLS)."""

from __future__ import annotations

import shutil
from datetime import datetime

import pytest

from backups.postgres import PostgresStore
from tests.backups.conftest import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def insert_rows(store: PostgresStore, ids: range) -> None:
    """One transaction per row, so every row has its own commit time."""
    with store.connect() as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, note text)")
        for row_id in ids:
            connection.execute("INSERT INTO orders VALUES (%s, 'committed')", (row_id,))


def server_time(store: PostgresStore) -> datetime:
    with store.connect() as connection:
        row = connection.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def test_restore_to_a_point_in_time_brings_back_exactly_the_rows_committed_before_it(
    archived_store: PostgresStore, cluster: Cluster
) -> None:
    store = archived_store
    insert_rows(store, range(1, 6))
    full = store.backup("full")
    insert_rows(store, range(6, 11))
    incremental = store.backup("incr")
    insert_rows(store, range(11, 16))  # only in archived WAL, after the last backup
    target = server_time(store)
    insert_rows(store, range(16, 21))  # after the target: must not come back
    store.wait_for_archive()

    listed = store.list()
    assert [(backup.label, backup.type) for backup in listed] == [(full.label, "full"), (incremental.label, "incr")]
    assert all(backup.size_bytes > 0 and backup.repository_bytes > 0 for backup in listed)
    assert listed[1].repository_bytes < listed[0].repository_bytes  # incremental: only changed files

    cluster.crash()
    shutil.rmtree(cluster.data_dir)  # the disk is gone

    plan = store.plan_restore(target)
    assert plan.point.label == incremental.label
    store.restore(plan)

    with store.connect() as connection:
        ids = [row[0] for row in connection.execute("SELECT id FROM orders ORDER BY id")]
        in_recovery = connection.execute("SELECT pg_is_in_recovery()").fetchone()
    assert ids == list(range(1, 16))
    assert in_recovery == (False,)  # promoted: the service can write again
