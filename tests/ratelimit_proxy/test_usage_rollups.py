"""Usage rollups (ratelimit_proxy/usage.py): counted in memory, upserted to a real SQLite file or PostgreSQL
server, added up across writers, bounded while the database is down or locked, flushed at shutdown."""

from __future__ import annotations

import dataclasses
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy
from flask import Flask
from prometheus_client import CollectorRegistry

from exporters.business.schema import LATENCY_BUCKETS_MS, api_usage_rollups
from ratelimit_proxy.app import create_app
from ratelimit_proxy.config import validate
from ratelimit_proxy.metrics import ProxyMetrics
from ratelimit_proxy.settings import (
    LimitSettings,
    ProxySettings,
    RouteSettings,
    StaticKey,
    TierSettings,
    UsageSettings,
)
from ratelimit_proxy.usage import (
    ANONYMOUS,
    BUCKET_COLUMNS,
    EPOCH,
    OTHER,
    RollupWriter,
    RouteTemplates,
    UsageRollups,
    status_class,
    writer_engine,
)
from service_kit.config import ConfigError
from service_kit.requests import hash_token
from tests.ratelimit_proxy.conftest import TEST_TIERS, Upstream
from tests.servers import PostgresServer
from tests.service_kit.service_statements import statement_series

STARTUP_KEY = "vbx_usage_startup_key"
STATIC = [StaticKey(sha256=hash_token(STARTUP_KEY), tier="startup", owner="acme")]
MINUTE = int(datetime(2026, 12, 1, 12, 30).timestamp())  # local time is fine: only a minute of epoch seconds


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def usage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The platform database on each dialect: a SQLite file, a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return platform_file(tmp_path)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.fresh_database("usage")


def platform_file(directory: Path, name: str = "platform.sqlite3") -> str:
    """The URL of a SQLite platform database that exists, as the platform's own does (empty here)."""
    sqlite3.connect(directory / name).close()
    return f"sqlite:///{directory / name}"


def rollups(
    url: str, registry: CollectorRegistry | None = None, routes: list[str] | None = None, **settings: Any
) -> UsageRollups:
    usage = UsageSettings(database_url=url, flush_seconds=3600, timeout_seconds=1.0, **settings)
    return UsageRollups(usage, RouteTemplates(routes or ["/api/*"]), ProxyMetrics(registry or CollectorRegistry()))


def table_rows(url: str) -> list[dict[str, Any]]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            select = api_usage_rollups.select().order_by(*api_usage_rollups.primary_key.columns)
            return [dict(row) for row in connection.execute(select).mappings()]
    finally:
        engine.dispose()


def totals(url: str) -> Counter[str]:
    """Calls and refusals over the whole table, per key id (and ``refused:<key id>``)."""
    counts: Counter[str] = Counter()
    for row in table_rows(url):
        counts[row["key_id"]] += row["calls"]
        counts[f"refused:{row['key_id']}"] += row["refused"]
    return counts


def record_at(usage: UsageRollups, minute: int, *call: Any) -> None:
    """``usage.record(*call)`` as if the clock were in ``minute`` (``started`` is a ``perf_counter`` time)."""
    usage.record(*call, started=minute + 30.0 - usage._wall_offset)


# -- pure parts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [(100, "1xx"), (204, "2xx"), (304, "3xx"), (429, "4xx"), (599, "5xx"), (0, "1xx"), (600, "5xx"), (1000, "5xx")],
)
def test_status_class_of_every_status_is_one_of_the_five(status: int, expected: str) -> None:
    assert status_class(status) == expected


def test_route_template_is_the_first_matching_glob_and_never_the_raw_path() -> None:
    routes = RouteTemplates(["/api/ai/complete", "/api/ai/*", "/api/v1/users*", "/api/ai/*"])
    assert routes.globs == ("/api/ai/complete", "/api/ai/*", "/api/v1/users*")  # duplicates once
    assert routes.template("/api/ai/complete") == "/api/ai/complete"
    assert routes.template("/api/ai/embeddings") == "/api/ai/*"
    assert routes.template("/api/v1/users/42") == "/api/v1/users*"
    assert routes.template("/api/v1/orders/42") == OTHER
    assert RouteTemplates([]).template("/anything") == OTHER
    assert routes.under(["/api/ai/*"]) == ["/api/ai/complete", "/api/ai/*"]


def test_route_templates_from_settings_take_routes_then_ai_paths_then_usage_routes() -> None:
    limits = LimitSettings(routes=[RouteSettings(name="upload", path="/api/v1/files/*")])
    templates = RouteTemplates.from_settings(limits, UsageSettings(routes=["/api/v1/*"]))
    assert templates.globs == ("/api/v1/files/*", "/api/ai/*", "/api/v1/*")


def test_calls_of_one_key_minute_route_and_class_fold_into_one_row(tmp_path: Path) -> None:
    url = platform_file(tmp_path)
    usage = rollups(url)
    for latency in (1.0, 25.0, 25.5, 100.0, 999.0, 1500.0):
        record_at(usage, MINUTE, "k1", "free", "acme", "/api/x", 200, latency, False)
    record_at(usage, MINUTE, "k1", "free", "acme", "/api/x", 429, 0.5, True)
    record_at(usage, MINUTE + 60, "k1", "free", "acme", "/elsewhere", 503, 2.0, False)
    usage.flush()
    rows = table_rows(url)
    assert [(r["route"], r["status_class"], r["calls"], r["refused"]) for r in rows] == [
        ("/api/*", "2xx", 6, 0),
        ("/api/*", "4xx", 1, 1),
        ("other", "5xx", 1, 0),
    ]
    first = rows[0]
    assert [first[c] for c in BUCKET_COLUMNS] == [2, 4, 4, 5]  # cumulative: at or under 25, 100, 250, 1000 ms
    assert float(first["latency_sum_ms"]) == pytest.approx(2650.5)
    assert float(first["latency_max_ms"]) == 1500.0
    assert (first["tier"], first["owner"], first["minute"]) == ("free", "acme", EPOCH + timedelta(seconds=MINUTE))


def test_a_full_buffer_drops_new_rows_counts_their_calls_and_keeps_counting_known_rows(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    usage = rollups(platform_file(tmp_path), registry, max_rows=2)
    for key in ("a", "b", "c", "d", "a", "b"):
        record_at(usage, MINUTE, key, "free", "", "/api/x", 200, 1.0, False)
    assert usage.buffered_rows == 2
    usage.flush()
    assert registry.get_sample_value("usage_rollup_dropped_total") == 2  # c and d
    assert registry.get_sample_value("usage_rollup_rows_written_total") == 2
    assert totals(usage.settings.database_url) == {"a": 2, "b": 2, "refused:a": 0, "refused:b": 0}


def test_owner_longer_than_the_column_is_cut_not_a_failed_batch(usage_url: str) -> None:
    usage = rollups(usage_url)
    record_at(usage, MINUTE, "k" * 64, "professional", "o" * 200, "/api/x", 200, 1.0, False)
    usage.flush()
    (row,) = table_rows(usage_url)
    assert row["owner"] == "o" * 120 and row["key_id"] == "k" * 64


# -- the database ----------------------------------------------------------------------------------------


def test_flushes_add_to_the_rows_already_written(usage_url: str) -> None:
    registry = CollectorRegistry()
    usage = rollups(usage_url, registry)
    record_at(usage, MINUTE, "k1", "free", "old owner", "/api/x", 200, 10.0, False)
    usage.flush()
    record_at(usage, MINUTE, "k1", "startup", "new owner", "/api/x", 200, 300.0, False)
    record_at(usage, MINUTE, "k1", "startup", "new owner", "/api/x", 200, 5.0, False)
    usage.flush()
    usage.flush()  # nothing held: no write
    (row,) = table_rows(usage_url)
    assert (row["calls"], float(row["latency_sum_ms"]), float(row["latency_max_ms"])) == (3, 315.0, 300.0)
    assert [row[c] for c in BUCKET_COLUMNS] == [2, 2, 2, 3]
    assert (row["tier"], row["owner"]) == ("startup", "new owner")  # the newer write's
    assert registry.get_sample_value("usage_rollup_flushes_total", {"result": "ok"}) == 2
    assert registry.get_sample_value("usage_rollup_rows_written_total") == 2
    assert registry.get_sample_value("usage_rollup_flush_duration_seconds_count") == 2


def test_two_writers_of_the_same_minutes_add_up_exactly(usage_url: str) -> None:
    """Two workers (own engines, own connections) flushing the same keys, minutes, routes and classes at
    once, 20 times each, in opposite orders of recording: every call is in the table once."""
    keys = [f"key-{i}" for i in range(40)]
    writers = [rollups(usage_url, batch_rows=7) for _ in range(2)]  # several statements per transaction
    writers[0].writer.ensure_table()  # the table exists before the race (creating it twice at once is no test)

    def work(index: int) -> None:
        usage = writers[index]
        order = keys if index == 0 else list(reversed(keys))
        for _ in range(20):
            for key in order:
                record_at(usage, MINUTE, key, "free", "", "/api/x", 200, 1.0, False)
                record_at(usage, MINUTE, key, "free", "", "/api/x", 429, 1.0, True)
            usage.flush()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(work, range(2)))
    for usage in writers:
        assert usage.buffered_rows == 0, "a flush failed and kept its rows"
    counted = totals(usage_url)
    assert {key: counted[key] for key in keys} == dict.fromkeys(keys, 2 * 20 * 2)
    assert {key: counted[f"refused:{key}"] for key in keys} == dict.fromkeys(keys, 2 * 20)


def test_a_row_the_database_refuses_for_good_is_dropped_and_counted(tmp_path: Path) -> None:
    """Anything but a connection, lock or timeout problem would fail every later flush the same way."""
    url = platform_file(tmp_path)
    registry = CollectorRegistry()
    usage = rollups(url, registry)
    record_at(usage, MINUTE, "k1", "free", "", "/api/x", 200, 1.0, False)
    usage.flush()
    with sqlite3.connect(tmp_path / "platform.sqlite3") as db:  # a rule the proxy's rows break
        db.execute("CREATE TRIGGER no_more BEFORE UPDATE ON api_usage_rollups BEGIN SELECT RAISE(ABORT, 'no'); END")
    record_at(usage, MINUTE, "k1", "free", "", "/api/x", 200, 1.0, False)
    record_at(usage, MINUTE, "k1", "free", "", "/api/x", 200, 1.0, False)
    usage.flush()
    assert usage.buffered_rows == 0
    assert registry.get_sample_value("usage_rollup_dropped_total") == 2
    assert registry.get_sample_value("usage_rollup_flushes_total", {"result": "error"}) == 1


def test_the_table_is_created_when_missing(usage_url: str) -> None:
    usage = rollups(usage_url)
    record_at(usage, MINUTE, "k1", "free", "", "/api/x", 200, 1.0, False)
    usage.flush()
    assert len(table_rows(usage_url)) == 1
    inspector = sqlalchemy.inspect(sqlalchemy.create_engine(usage_url))
    assert "ix_api_usage_rollups_key_minute" in {index["name"] for index in inspector.get_indexes("api_usage_rollups")}


# -- through the proxy -----------------------------------------------------------------------------------


@pytest.fixture
def usage_proxy(settings_for: Callable[..., ProxySettings], usage_url: str) -> Iterator[Flask]:
    usage = UsageSettings(database_url=usage_url, flush_seconds=3600, timeout_seconds=1.0, routes=["/api/v1/*"])
    app = create_app(settings_for(usage=usage, static_keys=STATIC))
    yield app
    app.extensions["ratelimit_proxy"].close()


def test_proxied_calls_are_counted_per_key_route_and_status_class(usage_proxy: Flask, usage_url: str) -> None:
    client = usage_proxy.test_client()
    keyed = {"Authorization": f"Bearer {STARTUP_KEY}"}
    statuses = Counter(client.get("/api/v1/users", headers=keyed).status_code for _ in range(12))
    assert statuses[429] >= 1  # startup's burst is 10 a second: at least the 11th and 12th in a second
    statuses[client.get("/api/v1/status/404", headers=keyed).status_code] += 1
    assert client.post("/api/ai/complete", json={"prompt": "hi"}).status_code == 200  # no key: anonymous
    assert client.get("/api/v1/users", headers={"Authorization": "Bearer vbx_unknown"}).status_code == 401
    usage_proxy.extensions["ratelimit_proxy"].usage.flush()
    counts: Counter[tuple[str, str, str, str, str]] = Counter()
    refused: Counter[str] = Counter()
    for row in table_rows(usage_url):
        counts[(row["key_id"], row["tier"], row["owner"], row["route"], row["status_class"])] += row["calls"]
        refused[row["key_id"]] += row["refused"]
        assert row["latency_le_1000ms"] <= row["calls"] and float(row["latency_sum_ms"]) > 0
    key_id = hash_token(STARTUP_KEY)
    assert counts[(key_id, "startup", "acme", "/api/v1/*", "2xx")] == statuses[200]
    assert counts[(key_id, "startup", "acme", "/api/v1/*", "4xx")] == statuses[429] + statuses[404]
    assert refused[key_id] == statuses[429]  # the limiter's 429s; the upstream's 404 is no refusal
    assert counts[(ANONYMOUS, "free", "", "/api/ai/*", "2xx")] == 1
    assert counts[(ANONYMOUS, "free", "", "/api/v1/*", "4xx")] == 1  # an unknown key is nobody's
    assert refused[ANONYMOUS] == 0
    assert sum(counts.values()) == 15


def test_no_customer_appears_in_a_metric_label(usage_proxy: Flask) -> None:
    client = usage_proxy.test_client()
    client.get("/api/v1/users", headers={"Authorization": f"Bearer {STARTUP_KEY}"})
    runtime = usage_proxy.extensions["ratelimit_proxy"]
    runtime.usage.flush()
    exposed = usage_proxy.extensions["service_kit"].metrics.registry.collect()
    labels = {value for family in exposed for sample in family.samples for value in sample.labels.values()}
    assert not labels & {hash_token(STARTUP_KEY), "acme", "/api/v1/*", "/api/v1/users"}


def test_tier_reload_changes_the_route_templates(settings_for: Callable[..., ProxySettings], tmp_path: Path) -> None:
    url = platform_file(tmp_path)
    settings = settings_for(usage=UsageSettings(database_url=url, flush_seconds=3600))
    routes = [RouteSettings(name="users", path="/api/v1/users")]
    reloaded = dataclasses.replace(settings, limits=dataclasses.replace(settings.limits, routes=routes))
    app = create_app(settings, reload=lambda: reloaded)
    runtime = app.extensions["ratelimit_proxy"]
    try:
        assert runtime.usage.routes.template("/api/v1/users") == OTHER
        assert runtime.reload_limits()
        assert runtime.usage.routes.template("/api/v1/users") == "/api/v1/users"
    finally:
        runtime.close()


# -- a slow, locked or stopped database ------------------------------------------------------------------


def test_a_locked_sqlite_file_keeps_requests_fast_and_rows_until_it_is_free(
    settings_for: Callable[..., ProxySettings], tmp_path: Path
) -> None:
    """While another process holds the write lock, the writer thread waits up to timeout_seconds (2 s) for
    it each flush and keeps its rows; requests meanwhile never wait with it, and nothing is lost."""
    path = tmp_path / "platform.sqlite3"
    usage = UsageSettings(database_url=platform_file(tmp_path), flush_seconds=0.2, timeout_seconds=2.0)
    # limits that a loop of requests never reaches (with leases it runs over 1,000 a second)
    unlimited = TierSettings(burst_per_second=10**9, per_minute=10**9, per_hour=10**9, ai_per_day=10**9)
    limits = LimitSettings(tiers={**TEST_TIERS, "free": unlimited})
    app = create_app(settings_for(usage=usage, limits=limits))
    runtime = app.extensions["ratelimit_proxy"]
    client = app.test_client()
    registry = app.extensions["service_kit"].metrics.registry
    try:
        assert client.get("/api/v1/users").status_code == 200
        time.sleep(0.5)  # the table exists, the first call is written
        lock = sqlite3.connect(path, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        latencies = []
        deadline = time.monotonic() + 4.5  # two flushes or more, each waiting 2 s for the lock
        while time.monotonic() < deadline:
            started = time.monotonic()
            answer = client.get("/api/v1/users")
            assert answer.status_code == 200, (len(latencies), answer.headers, answer.data)
            latencies.append(time.monotonic() - started)
        failed = registry.get_sample_value("usage_rollup_flushes_total", {"result": "error"})
        assert failed and failed >= 1
        # A request that waited for the lock would take 2 s; the margin is for a loaded test machine.
        assert max(latencies) < 1.5, f"slowest {max(latencies):.3f} s, {len(latencies)} requests"
        assert runtime.usage.buffered_rows >= 1
        lock.execute("ROLLBACK")
        lock.close()
        time.sleep(1.0)  # the next flush writes what was kept
        assert runtime.usage.buffered_rows == 0
    finally:
        runtime.close()
    assert totals(usage.database_url)[ANONYMOUS] == len(latencies) + 1
    assert registry.get_sample_value("usage_rollup_dropped_total") == 0


@pytest.mark.integration
@pytest.mark.slow
def test_a_stopped_postgresql_bounds_the_buffer_counts_drops_and_loses_nothing_else(
    settings_for: Callable[..., ProxySettings], postgres_server: PostgresServer
) -> None:
    """PostgreSQL down: every request is still served, the worker holds at most max_rows rows (100 keys
    call, 30 rows fit), calls beyond them are counted as dropped; once the server is back every kept
    call is written. (The shared server is stopped and started again, as the Redis outage tests do.)"""
    keys = [f"vbx_outage_{i}" for i in range(100)]
    static = [StaticKey(sha256=hash_token(key), tier="enterprise", owner=f"owner {i}") for i, key in enumerate(keys)]
    server = postgres_server
    try:
        url = server.fresh_database("outage")
        usage = UsageSettings(database_url=url, flush_seconds=0.2, timeout_seconds=1.0, max_rows=30)
        app = create_app(settings_for(usage=usage, static_keys=static))
        runtime = app.extensions["ratelimit_proxy"]
        registry = app.extensions["service_kit"].metrics.registry
        client = app.test_client()
        try:
            assert client.get("/api/v1/users").status_code == 200
            time.sleep(0.6)  # written: the table exists
            server.stop()
            for key in keys:
                started = time.monotonic()
                assert client.get("/api/v1/users", headers={"X-API-Key": key}).status_code == 200
                assert time.monotonic() - started < 0.5
                assert runtime.usage.buffered_rows <= 30
            time.sleep(1.0)  # flushes fail and keep their rows
            assert registry.get_sample_value("usage_rollup_flushes_total", {"result": "error"}) >= 1
            assert runtime.usage.buffered_rows <= 30
            server.start()
            time.sleep(2.0)
            assert runtime.usage.buffered_rows == 0
        finally:
            runtime.close()
        dropped = registry.get_sample_value("usage_rollup_dropped_total")
        assert dropped is not None and dropped >= 70
        assert sum(totals(url)[hash_token(key)] for key in keys) + dropped == 100
        assert totals(url)[ANONYMOUS] == 1
    finally:
        if server.process is None:
            server.start()


def test_the_buffer_is_bounded_under_a_flood_of_distinct_rows_while_the_database_is_down(tmp_path: Path) -> None:
    """Memory stays bounded by max_rows whatever the traffic: 20 000 distinct keys, a database that never
    answers, and the buffer never passes its cap; every call beyond it is counted."""
    registry = CollectorRegistry()
    dead = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # nothing listens on port 1
    usage = rollups(dead, registry, max_rows=1000)
    usage.settings = dataclasses.replace(usage.settings, flush_seconds=0.05)
    usage.start()
    try:
        for i in range(20_000):
            usage.record(f"key-{i}", "free", "", "/api/x", 200, 1.0, False)
            assert usage.buffered_rows <= 1000
    finally:
        usage.close()
    assert registry.get_sample_value("usage_rollup_dropped_total") == 19_000
    assert usage.buffered_rows == 1000  # kept for a database that never came back


# -- shutdown --------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_granian_workers_flush_their_rollups_when_stopped(upstream: Upstream, redis_url: str, tmp_path: Path) -> None:
    """As `serve` runs it: two granian workers, a flush interval longer than the test. Stopping granian
    (SIGTERM) makes each worker write what it holds before it exits."""
    from tests.ratelimit_proxy.test_processes import ProxyProcess, base_config, tiers

    database = tmp_path / "platform.sqlite3"
    platform_file(tmp_path)
    config = base_config(upstream, redis_url, limits=tiers(minute=100_000))
    proxy = ProxyProcess(
        tmp_path,
        {**config, "usage": {"flush_seconds": 3600.0}},
        workers=2,
        env={"RATELIMIT_PROXY_USAGE__DATABASE_URL": f"sqlite:///{database}"},
    )
    try:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(lambda _: requests.get(f"{proxy.url}/api/v1/users", timeout=10).status_code, range(300))
            )
        assert statuses == [200] * 300
        assert not sqlalchemy.inspect(sqlalchemy.create_engine(f"sqlite:///{database}")).has_table("api_usage_rollups")
    finally:
        proxy.process.send_signal(signal.SIGTERM)
        proxy.process.wait(20)
    assert totals(f"sqlite:///{database}")[ANONYMOUS] == 300


def test_a_missing_sqlite_file_is_not_created_and_the_rows_wait_for_it(tmp_path: Path) -> None:
    """The proxy adds a table to the platform database; it never makes an empty database of its own."""
    path = tmp_path / "platform.sqlite3"
    registry = CollectorRegistry()
    usage = rollups(f"sqlite:///{path}", registry)
    record_at(usage, MINUTE, "k1", "free", "", "/api/x", 200, 1.0, False)
    usage.flush()
    assert not path.exists() and usage.buffered_rows == 1
    assert registry.get_sample_value("usage_rollup_flushes_total", {"result": "error"}) == 1
    platform_file(tmp_path)
    usage.flush()
    assert totals(f"sqlite:///{path}")["k1"] == 1


def test_closing_flushes_without_a_thread(tmp_path: Path) -> None:
    url = platform_file(tmp_path)
    usage = rollups(url)
    record_at(usage, MINUTE, "k1", "free", "", "/api/x", 200, 1.0, False)
    usage.close()
    assert totals(url)["k1"] == 1


# -- settings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "limits", "key"),
    [
        (UsageSettings(database_url="mysql://db/platform"), LimitSettings(), "usage.database_url"),
        (UsageSettings(database_url="sqlite:///p.db", timeout_seconds=5.0), LimitSettings(), "usage.timeout_seconds"),
        (UsageSettings(database_url="sqlite:///p.db", routes=["/" + "a" * 120]), LimitSettings(), "usage.routes[0]"),
        (UsageSettings(database_url="sqlite:///p.db"), LimitSettings(ai_paths=["/" * 121]), "limits.ai_paths[0]"),
    ],
)
def test_usage_settings_are_checked_naming_the_key(usage: UsageSettings, limits: LimitSettings, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(ProxySettings(usage=usage, limits=limits), "proxy.yml")
    assert caught.value.key == key


def test_writer_engine_gives_up_connecting_within_the_timeout() -> None:
    engine = writer_engine("postgresql+psycopg://nobody@10.255.255.1:5432/none", 1.0, 10)  # unroutable
    started = time.monotonic()
    with pytest.raises(sqlalchemy.exc.OperationalError):
        RollupWriter(engine).write({(MINUTE, "k", "r", "2xx"): [1, 0, 1.0, 1.0, 1, 0, 0, 0, 0, "free", ""]})
    assert time.monotonic() - started < 3.0


def test_bucket_bounds_are_the_schema_s() -> None:
    assert tuple(f"latency_le_{b}ms" for b in LATENCY_BUCKETS_MS) == BUCKET_COLUMNS


def test_concurrent_recording_loses_no_call(tmp_path: Path) -> None:
    """Granian's blocking threads record at once, while the writer swaps the buffer under them."""
    url = platform_file(tmp_path)
    usage = rollups(url)
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            usage.flush()

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: usage.record(f"k{i % 3}", "free", "", "/api/x", 200, 1.0, False), range(6000)))
    finally:
        stop.set()
        thread.join()
    usage.flush()
    assert sum(totals(url)[f"k{i}"] for i in range(3)) == 6000


def test_the_rollup_writes_are_timed_by_the_kit_as_the_usage_database(usage_proxy: Flask) -> None:
    usage_proxy.test_client().get("/api/v1/users", headers={"Authorization": f"Bearer {STARTUP_KEY}"})
    usage_proxy.extensions["ratelimit_proxy"].usage.flush()
    assert sum(statement_series(usage_proxy, "usage").values()) >= 1
    registry = usage_proxy.extensions["service_kit"].metrics.registry
    inserts = [
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "db_statement_duration_seconds_count"
        and sample.labels["database"] == "usage"
        and sample.labels["statement_type"] == "insert"
    ]
    assert inserts and min(inserts) >= 1  # the rollup's upsert (INSERT … ON CONFLICT)
