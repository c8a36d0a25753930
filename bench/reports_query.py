"""Saved reports over 1M usage-rollup rows on SQLite: latency of ``GET /api/v1/reports/<id>/result``.

    .venv/bin/python -m bench.reports_query [--rows 1000000] [--days 30] [--requests 60] [--raw] [--without-index]
        [--explain] [--postgres]

The platform database (.run/bench/reports-platform-<rows>.sqlite3, made once) holds ``--rows`` rollup rows
over ``--days`` days (demo/usage_rollups.py). Each saved report is run ``--requests`` times through the
whole Flask app (auth, the saved spec, compile, SQL, JSON), after two warm-up runs; the goal is p95 under
200 ms. By default the service reads its usage summaries (reports_service/summary.py, refreshed once
before the runs, the time printed); ``--raw`` reads only the minute rows. ``--explain`` first prints, per
report, where each piece of its range is read from and how many rows, SQLite's EXPLAIN QUERY PLAN, the
time of each phase (summary ends, compile, SQL) outside the app, and the SQL's time against the previous
design (the per-day summary alone), runs alternated so both see the same machine (EXPLAIN ANALYZE on
PostgreSQL). ``--postgres`` copies the rows into a throwaway PostgreSQL (tests/servers.py) and runs there.
``--without-index`` drops the covering index exporters/business/schema.py declares for the minute-row
queries (``ix_api_usage_rollups_minute_owner``) to show what it buys.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from demo.usage_rollups import fill
from exporters.business.schema import api_usage_rollups
from reports_service.app import MIGRATIONS, create_app
from reports_service.query import compile_table, usage_pieces
from reports_service.scheduler import spec_adapter
from reports_service.settings import PlatformSettings, ReportsSettings
from reports_service.storage import metadata, utcnow
from reports_service.summary import covered_through, refresh
from service_kit.auth import create_token
from service_kit.db import make_engine, upgrade
from service_kit.settings import DatabaseSettings, LoggingSettings
from tests.servers import PostgresServer

REPORTS: list[tuple[str, dict[str, Any]]] = [
    (
        "top customers by calls, 7 days",
        {
            "source": "api_usage",
            "dimensions": ["owner", "tier"],
            "measures": ["calls", "server_errors", "refused", "avg_latency_ms"],
            "time_range": {"last_days": 7},
            "order_by": [{"field": "calls", "descending": True}],
            "limit": 20,
        },
    ),
    (
        "top customers by errors, 30 days",
        {
            "source": "api_usage",
            "dimensions": ["owner"],
            "measures": ["server_errors", "error_ratio", "calls"],
            "time_range": {"last_days": 30},
            "order_by": [{"field": "server_errors", "descending": True}],
            "limit": 20,
        },
    ),
    (
        "calls per day by tier, 30 days",
        {
            "source": "api_usage",
            "dimensions": ["tier"],
            "measures": ["calls", "refused"],
            "time_grain": "day",
            "time_range": {"last_days": 30},
            "chart": "line",
        },
    ),
    (
        "one customer's routes, 30 days",
        {
            "source": "api_usage",
            "dimensions": ["route", "status_class"],
            "measures": ["calls", "avg_latency_ms", "within_250ms_ratio"],
            "time_range": {"last_days": 30},
            "filters": [{"field": "owner", "values": ["customer-002"]}],
        },
    ),
]


def platform_database(rows: int, days: int) -> Path:
    path = Path(".run/bench") / f"reports-platform-{rows}.sqlite3"
    if path.exists() and time.time() - path.stat().st_mtime < 86_400:  # the reports look back from now
        with create_engine(f"sqlite:///{path}").connect() as connection:
            if connection.scalar(select(func.count()).select_from(api_usage_rollups)) == rows:
                return path
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    fill(f"sqlite:///{path}", rows, days, if_empty=False)
    print(f"made {path} with {rows} rows in {time.perf_counter() - started:.0f} s")
    return path


def set_index(path: Path, present: bool) -> None:
    """The schema's index for these queries, dropped or (re)created as asked."""
    engine = create_engine(f"sqlite:///{path}")
    index = next(i for i in api_usage_rollups.indexes if i.name == "ix_api_usage_rollups_minute_owner")
    with engine.begin() as connection:
        if present:
            index.create(connection, checkfirst=True)
        else:
            index.drop(connection, checkfirst=True)
        connection.execute(text("ANALYZE"))
    engine.dispose()


PREVIOUS = "reports_usage_days"  # the previous design: one summary per day and key, for every report


def explain(url: str, spec: dict[str, Any]) -> None:
    """One report's pieces (rows read from each), query plan and phase times, and its SQL's time with all
    the summaries against the previous design's per-day summary alone (runs alternated), printed."""
    engine = create_engine(url)
    parsed = spec_adapter.validate_python(spec)
    now = utcnow()
    started = time.perf_counter()
    through = covered_through(engine)
    ends_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    statement, *_ = compile_table(parsed, now, 10_000, through)
    compile_ms = (time.perf_counter() - started) * 1000
    previous, *_ = compile_table(parsed, now, 10_000, {PREVIOUS: through[PREVIOUS]})
    with engine.connect() as connection:
        for summary, low, high in usage_pieces(parsed, now, through):
            table = api_usage_rollups if summary is None else summary.table
            count = connection.scalar(
                select(func.count()).select_from(table).where(table.c.minute >= low, table.c.minute < high)
            )
            print(f"    {summary.name if summary else 'api_usage_rollups'}: {low} .. {high}: {count} rows")
        compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
        if engine.dialect.name == "sqlite":
            for row in connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}")):
                print(f"    plan: {row[3]}")
        else:
            for row in connection.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}")):
                print(f"    plan: {row[0]}")
        timings: dict[str, list[float]] = {"all": [], "previous": []}
        for _ in range(7):
            for name, query in (("all", statement), ("previous", previous)):
                started = time.perf_counter()
                connection.execute(query).all()
                timings[name].append((time.perf_counter() - started) * 1000)
    fast, slow = (statistics.median(timings[name]) for name in ("all", "previous"))
    print(
        f"    summary ends {ends_ms:.1f} ms, compile {compile_ms:.1f} ms; SQL median of 7: {fast:.1f} ms, "
        f"with {PREVIOUS} alone {slow:.1f} ms (x{slow / fast:.1f})"
    )
    engine.dispose()


def postgres_copy(path: Path) -> tuple[PostgresServer, str]:
    """A throwaway PostgreSQL (tests/servers.py) holding the SQLite file's rollups, copied with COPY."""
    server = PostgresServer()
    server.start()
    url = server.fresh_database("reports_bench")
    engine = create_engine(url)
    api_usage_rollups.create(engine)
    started = time.perf_counter()
    names = [column.name for column in api_usage_rollups.columns]
    source = create_engine(f"sqlite:///{path}")
    raw = engine.raw_connection()  # psycopg's own COPY, not an INSERT per row
    try:
        cursor: Any = raw.cursor()
        statement = f"COPY api_usage_rollups ({', '.join(names)}) FROM STDIN"
        with source.connect() as reading, cursor.copy(statement) as copy:
            for row in reading.execution_options(yield_per=20_000).execute(select(api_usage_rollups)):
                copy.write_row(tuple(row))
        raw.commit()
    finally:
        raw.close()
    print(f"copied the rollups to PostgreSQL in {time.perf_counter() - started:.0f} s")
    source.dispose()
    engine.dispose()
    return server, url


def vacuum(url: str) -> None:
    """What autovacuum does to a live table: statistics, and the visibility map that lets PostgreSQL answer
    from the covering index alone (a table fresh from COPY has none)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--without-index", action="store_true")
    parser.add_argument("--raw", action="store_true", help="no summaries: every report reads minute rows")
    parser.add_argument("--explain", action="store_true", help="pieces, query plan and phase times per report")
    parser.add_argument("--postgres", action="store_true", help="the same rows in a throwaway PostgreSQL")
    args = parser.parse_args(argv)
    path = platform_database(args.rows, args.days)
    set_index(path, present=not args.without_index)
    server, platform_url = postgres_copy(path) if args.postgres else (None, f"sqlite:///{path}")
    try:
        run(args, platform_url)
    finally:
        if server is not None:
            server.close()


def run(args: argparse.Namespace, platform_url: str) -> None:
    """Refresh the summaries, explain if asked, then time each saved report through the app."""
    if not args.raw:
        started = time.perf_counter()
        refresh(create_engine(platform_url), utcnow())
        print(f"usage summaries refreshed in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        refresh(create_engine(platform_url), utcnow())
        print(f"and again (what the job does every summary_refresh_seconds) in {time.perf_counter() - started:.1f} s")
    if args.postgres:
        vacuum(platform_url)
    if args.explain:
        for name, spec in REPORTS:
            print(f"{name}:")
            explain(platform_url, spec)
    with tempfile.TemporaryDirectory() as workdir:
        url = f"sqlite:///{workdir}/reports.sqlite3"
        upgrade(make_engine(url), MIGRATIONS, metadata)
        settings = ReportsSettings(
            database=DatabaseSettings(url=url),
            platform=PlatformSettings(url=platform_url, query_timeout_seconds=30, daily_summary=not args.raw),
            logging=LoggingSettings(level="WARNING"),
        )
        app = create_app(settings, start_jobs=False)
        with Session(app.extensions["database"].engine) as session:
            plain, _ = create_token(session, "bench", "agent", "bench")
            session.commit()
        headers = {"Authorization": f"Bearer {plain}"}
        client = app.test_client()
        load = os.getloadavg()[0]
        print(
            f"{'postgresql' if args.postgres else 'sqlite'} rows={args.rows} days={args.days} "
            f"index={'no' if args.without_index else 'yes'} "
            f"summary={'no' if args.raw else 'yes'} load1={load:.1f}"
        )
        print("| saved report | rows out | p50 | p95 | max |")
        print("|---|---|---|---|---|")
        for name, spec in REPORTS:
            report = client.post("/api/v1/reports", json={"name": name, "spec": spec}, headers=headers).json
            for _ in range(2):
                client.get(f"/api/v1/reports/{report['id']}/result", headers=headers)
            timings = []
            rows_out = 0
            for _ in range(args.requests):
                started = time.perf_counter()
                response = client.get(f"/api/v1/reports/{report['id']}/result", headers=headers)
                timings.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.json
                rows_out = len(response.json["rows"])
            print(
                f"| {name} | {rows_out} | {statistics.median(timings):.1f} ms | {percentile(timings, 0.95):.1f} ms "
                f"| {max(timings):.1f} ms |"
            )


if __name__ == "__main__":
    main()
