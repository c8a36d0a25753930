"""Backups (issue 13): the recovery point under continuous writes, and what SQLite replication costs the writer.

Recovery point, SQLite: a writer commits one row every ~2 ms with its own time while `vibelux-backup replicate`
runs (sync every 1 s, the shipped default); at a moment T both are SIGKILLed, as a lost machine would stop
them. The replica is then restored and the recovery point is T minus the newest row that came back: the
committed data a restore at T would lose. Cost: the same writer's commits per second in one run, alternating
phases with the replicator stopped and running, as a ratio (1.0: free). Recovery point, PostgreSQL
(``--postgres``, needs root and PostgreSQL 15 and pgBackRest): the same writer on a cluster archiving WAL
with the default ``archive_timeout`` of 60 s, stopped with ``pg_ctl -m immediate`` at T; the latest backup
plus archived WAL is restored into scratch and T minus its newest row is the recovery point.

Run: .venv/bin/python bench/backups.py [--rounds 5] [--postgres]
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `make bench` runs bench/*.py as scripts

import yaml

from backups.litestream import SqliteStore
from backups.settings import ENV_PREFIX, BackupSettings, validate
from service_kit.config import load_settings
from tests.backups.conftest import Cluster, Replicated
from tests.servers import SeaweedS3Server


class Writer(threading.Thread):
    """Commits (id, written_at) rows until stopped; ``commits`` counts them."""

    def __init__(self, path: Path, pause: float) -> None:
        super().__init__(daemon=True)
        self.path, self.pause, self.commits, self.running = path, pause, 0, True

    def run(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        connection.execute("CREATE TABLE IF NOT EXISTS writes (id INTEGER PRIMARY KEY, written_at REAL)")
        while self.running:
            connection.execute("INSERT INTO writes (written_at) VALUES (?)", (time.time(),))
            self.commits += 1
            if self.pause:
                time.sleep(self.pause)
        connection.close()


def recovery_point(s3: SeaweedS3Server, seconds: float, index: int) -> float:
    root = Path(tempfile.mkdtemp(prefix="vibelux-bench-litestream-"))
    replicated = Replicated(root, s3, f"/bench/rpo-{os.getpid()}-{index}", sync_interval=1.0)  # the default
    settings = replicated.settings()
    replicated.start()
    writer = Writer(replicated.path, 0.002)
    writer.start()
    time.sleep(seconds)
    assert replicated.process is not None
    replicated.process.send_signal(signal.SIGKILL)  # the litestream process (the CLI execs into it)
    crashed_at = time.time()
    writer.running = False
    writer.join()
    replicated.process.wait()
    store = SqliteStore("tickets", settings)
    copy = root / "restored.sqlite3"
    store.restore_into(copy, None)
    with sqlite3.connect(copy) as connection:
        newest = connection.execute("SELECT max(written_at) FROM writes").fetchone()[0]
    subprocess.run(["rm", "-rf", str(root)], check=False)
    return crashed_at - newest


def cost(s3: SeaweedS3Server, pairs: int, phase: float) -> list[tuple[float, float]]:
    """Commits per second without and with the replicator, in alternating phases of one run.

    "Without" means no litestream process (paused with SIGSTOP it would hold its read lock, the WAL could not
    be checkpointed and the writer would slow down for that reason). Each "with" phase starts 1 s after the
    replicator, so what it ships then includes what was written while it was stopped.
    """
    root = Path(tempfile.mkdtemp(prefix="vibelux-bench-litestream-"))
    replicated = Replicated(root, s3, f"/bench/cost-{os.getpid()}", sync_interval=1.0)
    replicated.settings()
    writer = Writer(replicated.path, 0.0)
    writer.start()
    replicated.start()
    time.sleep(3)  # the first snapshot is not the steady state
    replicated.stop()
    rates = []
    for _ in range(pairs):
        pair = []
        for running in (False, True):
            if running:
                replicated.start()
                time.sleep(1)
            before, started = writer.commits, time.perf_counter()
            time.sleep(phase)
            pair.append((writer.commits - before) / (time.perf_counter() - started))
            replicated.stop()
        rates.append((pair[0], pair[1]))
    writer.running = False
    writer.join()
    subprocess.run(["rm", "-rf", str(root)], check=False)
    return rates


def postgres_settings(s3: SeaweedS3Server, cluster: Cluster, prefix: str) -> BackupSettings:
    """Settings for the store ``tickets`` on ``cluster``, as an operator writes them (a file, keys in the
    environment), its work directory inside the cluster's root."""
    config = {
        "work_dir": str(cluster.root / "work"),
        "s3": {"endpoint": "127.0.0.1", "port": s3.port, "bucket": s3.bucket, "uri_style": "path",
               "ca_file": str(s3.tls.ca_file), "prefix": prefix},
        "postgres": {"tickets": {"data_dir": str(cluster.data_dir), "port": cluster.port,
                                 "socket_dir": str(cluster.root)}},
    }  # fmt: skip
    path = cluster.root / "backups.yml"
    path.write_text(yaml.safe_dump(config))
    env = {f"{ENV_PREFIX}_S3__ACCESS_KEY": s3.access_key, f"{ENV_PREFIX}_S3__SECRET_KEY": s3.secret_key}
    return validate(load_settings(BackupSettings, path, ENV_PREFIX, env), str(path))


def postgres_recovery_points(s3: SeaweedS3Server, crash_after: list[float]) -> list[float]:
    """One cluster; per round: write continuously, crash at T, restore into scratch, T minus the newest row."""
    import shutil

    from backups.postgres import PostgresStore, scratch_instance
    from tests.backups.conftest import USER

    root = Path(tempfile.mkdtemp(prefix="vibelux-bench-pg-"))
    root.chmod(0o755)
    shutil.chown(root, USER)
    cluster = Cluster(root)
    cluster.start()
    settings = postgres_settings(s3, cluster, f"/bench/pg-{os.getpid()}")
    store = PostgresStore("tickets", settings)
    store.configure()
    store.service("stop")
    store.service("start")
    store.create_stanza()
    with store.connect() as connection:  # in the backup: a restore always has the table, maybe no rows
        connection.execute("CREATE TABLE writes (id bigserial, written_at float8)")
    store.backup("full")
    points = []
    try:
        for seconds in crash_after:
            stop = threading.Event()

            def write(stop: threading.Event) -> None:
                import psycopg

                with store.connect() as connection:
                    while not stop.is_set():
                        try:
                            connection.execute("INSERT INTO writes (written_at) VALUES (%s)", (time.time(),))
                        except psycopg.OperationalError:
                            return  # the crash
                        time.sleep(0.002)

            writer = threading.Thread(target=write, args=(stop,), daemon=True)
            began = time.time()
            writer.start()
            time.sleep(seconds)
            cluster.crash()
            crashed_at = time.time()
            stop.set()
            writer.join()
            scratch = root / "scratch"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(mode=0o700)
            shutil.chown(scratch, USER)
            store.restore_into(scratch, None, archive=False)
            (scratch / "pg_hba.conf").write_text("local all all trust\n")
            with scratch_instance(store.store, scratch) as port, store.connect(str(scratch), port) as connection:
                row = connection.execute("SELECT max(written_at) FROM writes").fetchone()
            points.append(crashed_at - (row[0] if row and row[0] else began))  # no row back: all of it lost
            shutil.rmtree(scratch, ignore_errors=True)
            cluster.start()  # crash recovery from its own disk; archiving resumes
    finally:
        cluster.crash()
        shutil.rmtree(root, ignore_errors=True)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="writing time before each crash")
    parser.add_argument("--postgres", action="store_true", help="also PostgreSQL: two crashes, about 3 minutes")
    args = parser.parse_args()
    s3 = SeaweedS3Server()
    s3.start()
    try:
        points = [recovery_point(s3, args.seconds + index * 0.37, index) for index in range(args.rounds)]
        print(f"recovery point (s), {args.rounds} crashes: " + ", ".join(f"{p:.2f}" for p in points))
        print(f"  median {statistics.median(points):.2f} s, max {max(points):.2f} s (goal <= 10 s)")
        pairs = cost(s3, 8, 3.0)
        ratios = sorted(running / paused for paused, running in pairs)
        print(f"writer commits/s, median of 8 pairs of 3 s: {statistics.median(p for p, _ in pairs):.0f} without, "
              f"{statistics.median(r for _, r in pairs):.0f} replicating")  # fmt: skip
        median = statistics.median(ratios)
        print(f"  ratio replicating/without: median {median:.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}")
        if args.postgres:
            points = postgres_recovery_points(s3, [50.0, 95.0])
            print("PostgreSQL recovery point (s), crashes at 50 s and 95 s of writing: "
                  + ", ".join(f"{p:.1f}" for p in points) + " (goal <= 60 s)")  # fmt: skip
    finally:
        s3.close()


if __name__ == "__main__":
    main()
