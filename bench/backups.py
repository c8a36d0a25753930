"""SQLite backups (issue 13): the recovery point under continuous writes, and what replication costs the writer.

Recovery point: a writer commits one row every ~2 ms with its own time while `vibelux-backup replicate`
runs (sync every 1 s, the shipped default); at a moment T both are SIGKILLed, as a lost machine would stop
them. The replica is then restored and the recovery point is T minus the newest row that came back: the
committed data a restore at T would lose. Cost: the same writer's commits per second in one run, alternating
phases with the replicator stopped and running, as a ratio (1.0: free).

Run: .venv/bin/python bench/backups.py [--rounds 5]
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

from backups.litestream import SqliteStore
from tests.backups.conftest import Replicated
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


def cost(s3: SeaweedS3Server, phase: float) -> tuple[float, float]:
    """Commits per second without and with the replicator, alternating phases in one run."""
    root = Path(tempfile.mkdtemp(prefix="vibelux-bench-litestream-"))
    replicated = Replicated(root, s3, f"/bench/cost-{os.getpid()}", sync_interval=1.0)
    replicated.settings()
    writer = Writer(replicated.path, 0.0)
    writer.start()
    rates: dict[bool, list[float]] = {False: [], True: []}
    for replicating in (False, True, False, True):
        if replicating:
            replicated.start()
            time.sleep(2)  # its first snapshot is not the steady state
        before, started = writer.commits, time.perf_counter()
        time.sleep(phase)
        rates[replicating].append((writer.commits - before) / (time.perf_counter() - started))
        replicated.stop()
    writer.running = False
    writer.join()
    subprocess.run(["rm", "-rf", str(root)], check=False)
    return statistics.mean(rates[False]), statistics.mean(rates[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="writing time before each crash")
    args = parser.parse_args()
    s3 = SeaweedS3Server()
    s3.start()
    try:
        points = [recovery_point(s3, args.seconds + index * 0.37, index) for index in range(args.rounds)]
        print(f"recovery point (s), {args.rounds} crashes: " + ", ".join(f"{p:.2f}" for p in points))
        print(f"  median {statistics.median(points):.2f} s, max {max(points):.2f} s (goal <= 10 s)")
        without, with_replicator = cost(s3, 5.0)
        print(f"writer commits/s: {without:.0f} without replication, {with_replicator:.0f} with")
        print(f"  ratio {with_replicator / without:.2f}")
    finally:
        s3.close()


if __name__ == "__main__":
    main()
