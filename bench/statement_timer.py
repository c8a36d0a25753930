"""The kit's statement timer (service_kit/statements.py): what it adds to each statement.

One SQLite file, one engine without the timer and one with it, the same primary-key SELECT run in
alternating short rounds (so drift on a shared machine hits both alike); reported per statement, and as a ratio.

    .venv/bin/python -m bench.statement_timer --statements 2000 --rounds 50
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text

from service_kit.db import make_engine
from service_kit.settings import DatabaseSettings
from service_kit.statements import StatementTimer

SELECT = text("SELECT id, name FROM items WHERE id = :id")


def engine_at(path: Path, timed: bool) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    if timed:
        StatementTimer(CollectorRegistry(), "bench", DatabaseSettings(slow_statement_seconds=60)).instrument(engine)
    return engine


def run(engine: Engine, statements: int) -> float:
    """Seconds per statement over ``statements`` lookups on one connection."""
    with engine.connect() as connection:
        started = time.perf_counter()
        for i in range(statements):
            connection.execute(SELECT, {"id": i % 1000}).all()
        return (time.perf_counter() - started) / statements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--statements", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.sqlite3"
        setup = make_engine(f"sqlite:///{path}")
        with setup.begin() as connection:
            connection.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"))
            connection.execute(
                text("INSERT INTO items VALUES (:id, :name)"), [{"id": i, "name": f"n{i}"} for i in range(1000)]
            )
        plain, timed = engine_at(path, timed=False), engine_at(path, timed=True)
        run(plain, 1000), run(timed, 1000)  # warm both: statement caches, the timer's memo
        plain_times, timed_times, ratios = [], [], []
        for _ in range(args.rounds):  # paired: each ratio compares two runs a few milliseconds apart
            plain_time, timed_time = run(plain, args.statements), run(timed, args.statements)
            plain_times.append(plain_time)
            timed_times.append(timed_time)
            ratios.append(timed_time / plain_time)
    base, with_timer = statistics.median(plain_times), statistics.median(timed_times)
    print(f"{args.rounds} paired rounds of {args.statements} primary-key SELECTs on SQLite")
    print("| engine | median µs per statement | median paired ratio |")
    print("|---|---|---|")
    print(f"| without timer | {base * 1e6:.1f} | 1.00 |")
    print(f"| with timer | {with_timer * 1e6:.1f} | {statistics.median(ratios):.2f} |")
    print(f"added per statement (medians): {(with_timer - base) * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
