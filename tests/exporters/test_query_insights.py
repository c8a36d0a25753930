"""The query exporter against a real PostgreSQL 15 with pg_stat_statements loaded (and hypopg installed).

The session server preloads pg_stat_statements (tests/servers.py); each test makes its own databases: one
the exporter connects to (with the extensions) and one the workload runs in (the only one it watches).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from wsgiref.simple_server import make_server

import psycopg
import pytest
import requests
import sqlalchemy
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer
from sqlalchemy.engine import Engine
from werkzeug.test import Client

from exporters.database import read_only_engine
from exporters.queries.cli import DOCS, build
from exporters.queries.exporter import STATEMENT_COUNTERS, QueryInsightsExporter
from exporters.queries.settings import QueriesDatabaseSettings, QueriesSettings, StatementsSettings, SuggestionsSettings
from exporters.queries.suggestions import suggest
from exporters.serving import QuietHandler, exporter_app
from grafana.definitions import queries
from grafana.lint import dashboard_expressions
from service_kit import sqltext
from service_kit.db import make_engine, upgrade
from service_kit.settings import DatabaseSettings
from tests.servers import PostgresServer, PrometheusServer, free_port, wait_until
from tests.service_kit.example_service import ExampleSettings
from tests.service_kit.example_service import create_app as create_example_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOP_K = 20
OPERATORS = ("+", "-", "*")


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


@pytest.fixture
def insights_url(postgres_server: PostgresServer) -> str:
    url = postgres_server.fresh_database("insights")
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        connection.execute("CREATE EXTENSION pg_stat_statements")
        connection.execute("CREATE EXTENSION hypopg")
    return url


@pytest.fixture
def workload(postgres_server: PostgresServer) -> Iterator[psycopg.Connection]:
    url = postgres_server.fresh_database("workload")
    with psycopg.connect(libpq(url), autocommit=True) as connection:
        yield connection


def exporter_for(insights_url: str, watched: str, **suggestions: object) -> QueryInsightsExporter:
    settings = QueriesSettings(
        database=QueriesDatabaseSettings(url=insights_url, databases=[watched]),
        statements=StatementsSettings(top_k=TOP_K),
        suggestions=replace(SuggestionsSettings(), **suggestions),  # type: ignore[arg-type]
    )
    return QueryInsightsExporter(read_only_engine(insights_url, 10), settings, CollectorRegistry())


def exported(registry: CollectorRegistry, metric: str) -> dict[tuple[str, ...], float]:
    """Samples of one metric family, by their label values."""
    values = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == metric:
                values[tuple(sample.labels.values())] = sample.value
    return values


def truth(insights_url: str, watched: str) -> tuple[int, float]:
    """The server's own totals for the watched database: calls and execution seconds."""
    with psycopg.connect(libpq(insights_url)) as connection:
        calls, milliseconds = connection.execute(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0) FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)",
            [watched],
        ).fetchone()  # type: ignore[misc]
    return int(calls), float(milliseconds) / 1000


def distinct_statements(count: int) -> Iterator[str]:
    """``count`` statements of different shapes (the operators differ; PostgreSQL normalises constants)."""
    for operators in itertools.islice(itertools.product(OPERATORS, repeat=9), count):
        yield "SELECT 1" + "".join(f" {op} {i + 2}" for i, op in enumerate(operators))


HEAVY = [f"SELECT count(*) FROM generate_series(1, 400000) AS g(x) WHERE x % {n} = 0" for n in (3, 5)]


def test_ten_thousand_distinct_queries_make_at_most_k_plus_one_series_that_add_up_to_the_server_totals(
    insights_url: str, workload: psycopg.Connection
) -> None:
    watched = workload.info.dbname
    # Room for all 10,000 in the view (pg_stat_statements.max is 20,000): earlier tests of the session filled
    # it with their own statements, and an entry evicted between two reads is lost to both sides of the sum.
    with psycopg.connect(libpq(insights_url), autocommit=True) as connection:
        connection.execute("SELECT pg_stat_statements_reset()")
    exporter = exporter_for(insights_url, watched, enabled=False)
    registry = exporter.registry
    calls_before, seconds_before = truth(insights_url, watched)
    exporter.read_statements()  # the baseline
    previous = exported(registry, "pg_statement_calls_total")
    increase_calls = increase_seconds = 0.0
    statements = list(distinct_statements(10_000))
    previous_seconds = exported(registry, "pg_statement_exec_seconds_total")
    for chunk in range(4):
        for sql in statements[chunk * 2500 : (chunk + 1) * 2500]:
            workload.execute(sql)
        for sql in [*HEAVY, "SELECT count(*) FROM generate_series(1, 400000) AS g(x) WHERE (x * 2) > 7"]:
            workload.execute(sql)
        exporter.read_statements()
        calls = exported(registry, "pg_statement_calls_total")
        seconds = exported(registry, "pg_statement_exec_seconds_total")
        for name, _help, _attribute in STATEMENT_COUNTERS:
            assert len(exported(registry, name)) <= TOP_K + 1
        assert len(exported(registry, "pg_statement_info")) <= TOP_K
        increase_calls += prometheus_increase(previous, calls)
        increase_seconds += prometheus_increase(previous_seconds, seconds)
        previous, previous_seconds = calls, seconds
    calls_after, seconds_after = truth(insights_url, watched)
    assert calls_after - calls_before >= 10_000
    assert increase_calls == pytest.approx(calls_after - calls_before, rel=0.01)
    assert increase_seconds == pytest.approx(seconds_after - seconds_before, rel=0.01)
    members = {labels[0] for labels in exported(registry, "pg_statement_calls_total")}
    assert {sqltext.fingerprint(sql) for sql in HEAVY} <= members  # the slowest are the top K
    texts = {labels[2] for labels in exported(registry, "pg_statement_info")}
    assert sqltext.normalise(HEAVY[0]) in texts  # the text without its constants
    assert "$" not in "".join(texts)
    assert exported(registry, "pg_statements_entries")[()] >= 10_000
    assert exported(registry, "pg_insights_extension_available") == {("pg_stat_statements",): 1, ("hypopg",): 1}


def prometheus_increase(before: dict[tuple[str, ...], float], after: dict[tuple[str, ...], float]) -> float:
    """increase() as Prometheus takes it: per series seen both times (a series must never go down)."""
    total = 0.0
    for labels, value in after.items():
        if labels in before:
            assert value >= before[labels], f"{labels} went down"
            total += value - before[labels]
        else:
            assert value == 0, f"{labels} joined at {value}, not 0"
    return total


def test_a_reset_keeps_every_series_monotonic_and_counts_on(insights_url: str, workload: psycopg.Connection) -> None:
    watched = workload.info.dbname
    exporter = exporter_for(insights_url, watched, enabled=False)
    statements = list(distinct_statements(200))
    for sql in statements:
        workload.execute(sql)
    exporter.read_statements()
    for sql in statements * 3:
        workload.execute(sql)
    exporter.read_statements()
    before = exported(exporter.registry, "pg_statement_calls_total")
    with psycopg.connect(libpq(insights_url), autocommit=True) as connection:
        connection.execute("SELECT pg_stat_statements_reset()")
    for sql in statements[:50]:
        workload.execute(sql)
    exporter.read_statements()
    after = exported(exporter.registry, "pg_statement_calls_total")
    assert prometheus_increase(before, after) == 50  # since the reset, nothing lost and nothing negative


def test_missing_extensions_are_reported_as_unavailable_not_as_errors(
    postgres_server: PostgresServer, workload: psycopg.Connection
) -> None:
    bare_url = postgres_server.fresh_database("bare")
    exporter = exporter_for(bare_url, workload.info.dbname)
    exporter.read_statements()
    exporter.find_suggestions()
    registry = exporter.registry
    assert exported(registry, "pg_insights_extension_available") == {("pg_stat_statements",): 0, ("hypopg",): 0}
    assert exported(registry, "pg_statement_calls_total") == {}
    assert exported(registry, "pg_index_suggestion_cost_reduction_ratio") == {}


@pytest.fixture
def orders(insights_url: str) -> Engine:
    """50,000 orders in the exporter's own database: customer_id selective, status three values."""
    engine = sqlalchemy.create_engine(insights_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL, status text NOT NULL, note text)"
        )
        connection.exec_driver_sql(
            "INSERT INTO orders (customer_id, status, note) SELECT mod(g * 7919, 5000), "
            "(ARRAY['open', 'paid', 'shipped'])[1 + mod(g, 3)], repeat('x', 40) FROM generate_series(1, 50000) AS g"
        )
        connection.exec_driver_sql("ANALYZE orders")
    return engine


def run_and_flush(engine: Engine, sql: str, values: list[dict[str, object]]) -> None:
    """Run the statement once per values, then have the backend report its table statistics
    (pg_stat_user_tables) before the commit returns, instead of some seconds after going idle."""
    with engine.connect() as connection:
        for params in values:
            connection.execute(sqlalchemy.text(sql), params)
        connection.exec_driver_sql("SELECT pg_stat_force_next_flush()")
        connection.commit()


def test_a_missing_index_is_suggested_and_a_useless_one_is_not(insights_url: str, orders: Engine) -> None:
    run_and_flush(orders, "SELECT * FROM orders WHERE customer_id = :c", [{"c": c} for c in range(30)])
    run_and_flush(orders, "SELECT count(*) FROM orders WHERE status = :s", [{"s": "open"}] * 30)
    engine = read_only_engine(insights_url, 10)
    with engine.connect() as connection:
        found = suggest(connection, SuggestionsSettings(min_rows=1000))
    assert [(s.table, s.column) for s in found] == [("public.orders", "customer_id")]
    assert found[0].cost_reduction > 0.9
    assert found[0].fingerprint == sqltext.fingerprint("SELECT * FROM orders WHERE customer_id = $1")

    exporter = exporter_for(insights_url, database_name(insights_url))
    exporter.find_suggestions()
    assert list(exported(exporter.registry, "pg_index_suggestion_cost_reduction_ratio")) == [
        ("public.orders", "customer_id", found[0].fingerprint)
    ]
    # the hypothetical indexes lived in the exporter's session only: nothing was built
    with orders.connect() as connection:
        indexes = connection.exec_driver_sql("SELECT indexname FROM pg_indexes WHERE tablename = 'orders'")
        assert [row.indexname for row in indexes] == ["orders_pkey"]


def test_an_existing_index_is_not_suggested_again(insights_url: str, orders: Engine) -> None:
    with orders.begin() as connection:
        connection.exec_driver_sql("CREATE INDEX orders_customer ON orders (customer_id)")
    run_and_flush(orders, "SELECT count(*) FROM orders WHERE status = :s", [{"s": "open"}] * 30)  # seq scans
    run_and_flush(orders, "SELECT * FROM orders WHERE customer_id = :c", [{"c": c} for c in range(30)])
    with read_only_engine(insights_url, 10).connect() as connection:
        assert suggest(connection, SuggestionsSettings(min_rows=1000)) == []


def test_the_served_exporter_is_ready_after_its_first_read_and_serves_the_statements(
    insights_url: str, workload: psycopg.Connection
) -> None:
    settings = QueriesSettings(
        database=QueriesDatabaseSettings(url=insights_url, databases=[workload.info.dbname]),
        statements=StatementsSettings(interval_seconds=0.2, timeout_seconds=0.2),
        suggestions=SuggestionsSettings(enabled=False),
    )
    exporter = build(settings)
    client = Client(exporter_app(exporter, "queries", DOCS))
    assert client.get("/readyz").status_code == 503
    exporter.start()
    try:
        workload.execute("SELECT 41 + 1")
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=10)
        wait_until(lambda: b'pg_statement_calls_total{fingerprint="' in client.get("/metrics").data, timeout=10)
        body = client.get("/metrics").data.decode()
        assert 'pg_insights_extension_available{extension="pg_stat_statements"} 1.0' in body
    finally:
        exporter.stop()


@pytest.fixture
def example_service(tmp_path: Path) -> Iterator[str]:
    """The kit's example service on a free port (its SQLite database timed by the kit): host:port."""
    url = f"sqlite:///{tmp_path / 'example.sqlite3'}"
    upgrade(make_engine(url))
    with serving(create_example_app(ExampleSettings(database=DatabaseSettings(url=url)))) as address:
        yield address


@contextmanager
def serving(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", free_port(), app, ThreadingWSGIServer, QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_every_query_of_the_dashboard_returns_data_through_prometheus(
    insights_url: str, orders: Engine, example_service: str
) -> None:
    """The stack's path: workload, the exporter and a service's /metrics, Prometheus scraping both, and each
    expression of the Database queries dashboard (Grafana's range variables replaced) answering."""
    run_and_flush(orders, "SELECT * FROM orders WHERE customer_id = :c", [{"c": c} for c in range(30)])
    settings = QueriesSettings(
        database=QueriesDatabaseSettings(url=insights_url),
        statements=StatementsSettings(interval_seconds=0.5, timeout_seconds=0.5),
        suggestions=SuggestionsSettings(interval_seconds=1, timeout_seconds=1),
    )
    exporter = build(settings)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "queries", "static_configs": [{"targets": []}]},
                           {"job_name": "example", "static_configs": [{"targets": [example_service]}]}],
    }  # fmt: skip
    with serving(exporter_app(exporter, "queries", DOCS)) as address:
        config["scrape_configs"][0]["static_configs"] = [{"targets": [address]}]
        prometheus = PrometheusServer(config)
        prometheus.start()
        exporter.start()
        try:
            expressions = dict(dashboard_expressions(queries()))
            deadline = time.monotonic() + 40
            missing = set(expressions)
            while missing and time.monotonic() < deadline:
                run_and_flush(orders, "SELECT * FROM orders WHERE customer_id = :c", [{"c": 7}] * 5)
                requests.get(f"http://{example_service}/readyz", timeout=5)  # a statement on its database
                missing = {title for title in missing if not prometheus.query(grafana_free(expressions[title]))}
                time.sleep(0.5)
            assert not missing, f"no data for {sorted(missing)}"
        finally:
            exporter.stop()
            prometheus.close()


def grafana_free(expr: str) -> str:
    """The expression as Grafana sends it, with its range variables as short windows for 1 s scrapes."""
    return expr.replace("$__rate_interval", "5s").replace("$__range", "1m")
