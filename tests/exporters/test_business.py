"""Business exporter: rows to samples, the shipped queries on a known database, failures isolated, CLI."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy
import yaml
from prometheus_client import generate_latest

from demo.business_db import generate
from exporters.business.analytics import metric_specs, runner
from exporters.business.exporter import BusinessExporter
from exporters.business.queries import (
    MetricSpec,
    QueryResultError,
    QueryRunner,
    QuerySpec,
    check_query,
    samples_from_rows,
)
from exporters.business.schema import ai_requests, metadata, sessions, subscriptions, users
from exporters.business.settings import ENV_PREFIX, BusinessSettings
from exporters.database import read_only_engine
from service_kit.config import load_settings
from tests.exporters.helpers import SLACK_SECONDS, ExporterProcess, run_cli, sample, write_config
from tests.servers import free_port, wait_until

TIER = MetricSpec(labels={"tier": ["free", "professional"]})


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (
            [{"tier": "free", "value": 3}, {"tier": "professional", "value": Decimal("2.5")}],
            {("free",): 3.0, ("professional",): 2.5},
        ),
        ([{"tier": "free", "value": 3}], {("free",): 3.0, ("professional",): 0.0}),
        (
            [{"tier": "gold", "value": 1}, {"tier": "x", "value": 2}],
            {("free",): 0.0, ("professional",): 0.0, ("other",): 3.0},
        ),
        ([{"tier": "free", "value": None}], {("free",): 0.0, ("professional",): 0.0}),
        ([], {("free",): 0.0, ("professional",): 0.0}),
    ],
    ids=["values", "absent-tier-is-zero", "undeclared-folded-into-other", "null-skipped", "no-rows"],
)
def test_rows_become_bounded_samples(rows: list[dict[str, object]], expected: dict[tuple[str, ...], float]) -> None:
    samples = samples_from_rows({"business_users": TIER}, rows)
    assert {labels: value for _, labels, value in samples} == expected


def test_unlabelled_metric_with_null_or_no_row_publishes_nothing() -> None:
    spec = {"business_mrr_change_30d_usd": MetricSpec()}
    assert samples_from_rows(spec, [{"value": None}]) == []
    assert samples_from_rows(spec, []) == []
    assert samples_from_rows(spec, [{"value": -5}]) == [("business_mrr_change_30d_usd", (), -5.0)]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"value": 1}], "no column 'tier' for business_users"),
        ([{"tier": "professional", "value": "many"}], "not numeric"),
    ],
)
def test_rows_that_do_not_fit_the_spec_are_an_error(rows: list[dict[str, object]], message: str) -> None:
    with pytest.raises(QueryResultError, match=message):
        samples_from_rows({"business_users": TIER}, rows)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (QuerySpec(sql="SELECT 1 AS value"), "at least one metric"),
        (QuerySpec(sql="SELECT :since AS value", metrics={"m": MetricSpec()}), "got :since"),
        (QuerySpec(sql="SELECT 1 AS value", metrics={"bad-name": MetricSpec()}), "a Prometheus metric name"),
        (QuerySpec(sql="SELECT 1 AS value", metrics={"m": MetricSpec(labels={"tier": []})}), "labels must be bounded"),
        (QuerySpec(sql="SELECT 1 AS value WHERE :now > :ago_15m", metrics={"m": MetricSpec()}), None),
    ],
)
def test_query_specs_are_checked_at_start_up(spec: QuerySpec, problem: str | None) -> None:
    found = check_query(spec)
    assert found == problem if problem is None else problem in (found or "")


def known_database(url: str) -> str:
    """A small reference-schema database whose every metric value is known by construction."""
    engine = sqlalchemy.create_engine(url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    now = datetime.now(UTC).replace(tzinfo=None)
    ago = lambda **delta: now - timedelta(**delta)  # noqa: E731
    with engine.begin() as db:
        db.execute(
            users.insert(),
            [
                {"id": 1, "signed_up_at": ago(days=300), "tier": "professional"},
                {"id": 2, "signed_up_at": ago(days=200), "tier": "free"},
                {"id": 3, "signed_up_at": ago(days=100), "tier": "startup"},
                {"id": 4, "signed_up_at": ago(days=20), "tier": "free"},
                {"id": 5, "signed_up_at": ago(hours=3), "tier": "free"},
            ],
        )
        db.execute(
            subscriptions.insert(),
            [
                # user 1: startup, upgraded to professional 10 days ago
                {
                    "user_id": 1,
                    "plan": "startup",
                    "status": "upgraded",
                    "monthly_amount_usd": 29,
                    "started_at": ago(days=250),
                    "ended_at": ago(days=10),
                },
                {
                    "user_id": 1,
                    "plan": "professional",
                    "status": "active",
                    "monthly_amount_usd": 99,
                    "started_at": ago(days=10),
                    "ended_at": None,
                },
                # user 2: churned 5 days ago
                {
                    "user_id": 2,
                    "plan": "startup",
                    "status": "churned",
                    "monthly_amount_usd": 29,
                    "started_at": ago(days=150),
                    "ended_at": ago(days=5),
                },
                {
                    "user_id": 3,
                    "plan": "startup",
                    "status": "active",
                    "monthly_amount_usd": 29,
                    "started_at": ago(days=40),
                    "ended_at": None,
                },
                # trials are never revenue, and one that expires is not a churned subscription
                {
                    "user_id": 3,
                    "plan": "startup",
                    "status": "converted",
                    "monthly_amount_usd": 0,
                    "started_at": ago(days=54),
                    "ended_at": ago(days=40),
                },
                {
                    "user_id": 4,
                    "plan": "professional",
                    "status": "expired",
                    "monthly_amount_usd": 0,
                    "started_at": ago(days=20),
                    "ended_at": ago(days=6),
                },
            ],
        )
        db.execute(
            sessions.insert(),
            [
                {"user_id": 1, "started_at": ago(minutes=30), "last_activity_at": ago(minutes=5)},
                {"user_id": 1, "started_at": ago(days=3), "last_activity_at": ago(days=3)},
                {"user_id": 2, "started_at": ago(days=2), "last_activity_at": ago(days=2)},
                {"user_id": 4, "started_at": ago(days=25), "last_activity_at": ago(days=25)},
                {"user_id": 3, "started_at": ago(hours=2), "last_activity_at": ago(hours=1)},
            ],
        )
        db.execute(
            ai_requests.insert(),
            [
                {"user_id": 1, "created_at": ago(hours=hours), "model": "vibe-large", "tokens": 100}
                for hours in (1, 2, 30, 100, 200)
            ],
        )
    engine.dispose()
    return url


EXPECTED = {
    ("business_users", (("tier", "free"),)): 3.0,
    ("business_users", (("tier", "startup"),)): 1.0,
    ("business_users", (("tier", "professional"),)): 1.0,
    ("business_users", (("tier", "enterprise"),)): 0.0,
    ("business_new_signups", (("window", "1d"),)): 1.0,
    ("business_new_signups", (("window", "7d"),)): 1.0,
    ("business_new_signups", (("window", "30d"),)): 2.0,
    ("business_user_growth_ratio", (("window", "7d"),)): 1 / 4,
    ("business_user_growth_ratio", (("window", "30d"),)): 2 / 3,
    ("business_mrr_usd", (("tier", "startup"),)): 29.0,
    ("business_mrr_usd", (("tier", "professional"),)): 99.0,
    ("business_mrr_usd", (("tier", "enterprise"),)): 0.0,
    # now: 99 (pro) + 29 (user 3) = 128; 30 days ago: 29 (user 1) + 29 (user 2) + 29 (user 3) = 87
    ("business_mrr_change_30d_usd", ()): 41.0,
    ("business_churned_subscriptions", (("window", "7d"),)): 1.0,
    ("business_churned_subscriptions", (("window", "30d"),)): 1.0,
    ("business_active_users", (("window", "1d"),)): 2.0,
    ("business_active_users", (("window", "7d"),)): 3.0,
    ("business_active_users", (("window", "30d"),)): 4.0,
    ("business_active_sessions", ()): 1.0,
    ("business_ai_requests", (("window", "1d"),)): 2.0,
    ("business_ai_requests", (("window", "7d"),)): 4.0,
}


@pytest.fixture(scope="module")
def shipped() -> BusinessSettings:
    settings = load_settings(BusinessSettings, "config/exporters/business.yml", ENV_PREFIX, {})
    settings.validate("config/exporters/business.yml")
    return settings


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def known_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The known database on SQLite, and on a real PostgreSQL."""
    if request.param == "sqlite":
        return known_database(f"sqlite:///{tmp_path / 'known.sqlite3'}")
    return known_database(request.getfixturevalue("postgres_url"))


def test_shipped_queries_give_the_known_values_of_a_known_database(known_url: str, shipped: BusinessSettings) -> None:
    """The SQL queries; the computed ones are checked against a reference in test_analytics.py."""
    engine = read_only_engine(known_url, 5)
    found = {}
    for spec in shipped.queries.values():
        if spec.compute:
            continue
        for name, labels, value in QueryRunner(engine, spec)():
            found[(name, tuple(zip(spec.metrics[name].labels, labels, strict=True)))] = value
    assert found == pytest.approx(EXPECTED)


def test_the_known_database_is_dated_from_when_it_is_built(tmp_path: Path) -> None:
    """Not from when this module was imported: a suite that reaches the test ten minutes after collection
    would find the "5 minutes ago" session outside the 15-minute window (a clean-clone run did)."""

    def newest_activity(name: str) -> str:
        with sqlite3.connect(known_database(f"sqlite:///{tmp_path / name}").removeprefix("sqlite:///")) as db:
            return str(db.execute("SELECT MAX(last_activity_at) FROM sessions").fetchone()[0])

    first = newest_activity("first.sqlite3")
    time.sleep(0.01)
    assert newest_activity("second.sqlite3") > first


def test_demo_database_feeds_every_default_metric(tmp_path: Path, shipped: BusinessSettings) -> None:
    counts = generate(tmp_path / "demo.sqlite3", total_users=600, months=14, seed=1, progress=False)
    assert counts["users"] > 200 and counts["sessions"] > 1000 and counts["ai_requests"] > 100
    engine = read_only_engine(f"sqlite:///{tmp_path / 'demo.sqlite3'}", 5)
    values: dict[str, float] = {}
    for spec in shipped.queries.values():
        for name, _, value in runner(engine, spec)():
            values[name] = values.get(name, 0.0) + abs(value)
    assert set(values) == {metric for spec in shipped.queries.values() for metric in metric_specs(spec)}
    # sessions active this very minute: a 600-user demo has none at some hours of the day (the default 3,000 do)
    assert all(values[name] > 0 for name in values if name != "business_active_sessions"), values
    with sqlite3.connect(tmp_path / "demo.sqlite3") as db:
        latest = db.execute("SELECT MAX(last_activity_at) FROM sessions").fetchone()[0]
    assert latest <= datetime.now(UTC).replace(tzinfo=None).isoformat(" ")  # history ends now, not later


@pytest.fixture
def exporter_with_a_broken_and_a_slow_query(tmp_path: Path) -> Iterator[BusinessExporter]:
    url = known_database(f"sqlite:///{tmp_path / 'known.sqlite3'}")
    fast = {"interval_seconds": 0.2, "timeout_seconds": 0.5}
    queries = {
        "users_by_tier": QuerySpec(
            sql="SELECT tier, COUNT(*) AS value FROM users GROUP BY tier",
            metrics={"business_users": MetricSpec(labels={"tier": ["free", "startup", "professional"]})},
            **fast,
        ),
        "broken": QuerySpec(
            sql="SELECT COUNT(*) AS value FROM no_such_table", metrics={"business_broken": MetricSpec()}, **fast
        ),
        "runaway": QuerySpec(  # counts to a billion: only the deadline stops it
            sql="WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) "
            "SELECT COUNT(*) AS value FROM n",
            metrics={"business_runaway": MetricSpec()},
            **fast,
        ),
    }
    exporter = BusinessExporter(read_only_engine(url, 0.5), queries)
    exporter.start()
    yield exporter
    exporter.stop()


def test_a_broken_and_a_runaway_query_are_counted_while_the_others_are_served(
    exporter_with_a_broken_and_a_slow_query: BusinessExporter,
) -> None:
    value = exporter_with_a_broken_and_a_slow_query.registry.get_sample_value
    wait_until(lambda: (value("business_query_errors_total", {"query": "runaway"}) or 0) >= 2, timeout=10)
    assert value("business_query_errors_total", {"query": "broken"}) >= 2
    assert value("business_query_errors_total", {"query": "users_by_tier"}) == 0
    assert value("business_users", {"tier": "free"}) == 3.0
    assert value("business_broken") is None and value("business_runaway") is None  # stale, not zero
    assert (
        value("business_query_duration_seconds", {"query": "runaway"}) < 0.5 + SLACK_SECONDS
    )  # stopped at its 0.5 s deadline
    assert value("business_query_last_success_timestamp_seconds", {"query": "runaway"}) is None
    assert value("business_query_last_success_timestamp_seconds", {"query": "users_by_tier"}) > time.time() - 60
    started = time.perf_counter()
    generate_latest(exporter_with_a_broken_and_a_slow_query.registry)
    assert time.perf_counter() - started < 0.25  # from the cache: never waits for the runaway query (0.5 s)


@pytest.mark.integration
def test_postgresql_statement_timeout_stops_a_runaway_query(postgres_url: str) -> None:
    spec = QuerySpec(sql="SELECT 1 AS value FROM pg_sleep(5)", timeout_seconds=0.5, metrics={"m": MetricSpec()})
    runner = QueryRunner(read_only_engine(postgres_url, 5), spec)
    started = time.perf_counter()
    with pytest.raises(sqlalchemy.exc.OperationalError, match="statement timeout"):
        runner()
    assert time.perf_counter() - started < 0.5 + SLACK_SECONDS


@pytest.mark.integration
def test_exporter_process_serves_the_demo_database(tmp_path: Path) -> None:
    generate(tmp_path / "demo.sqlite3", total_users=300, months=3, seed=2, progress=False)
    port = free_port()
    shipped_config = yaml.safe_load(Path("config/exporters/business.yml").read_text())
    config = write_config(tmp_path / "business.yml", {**shipped_config, "server": {"port": port}})
    exporter = ExporterProcess(
        "business", config, port, env={"EXPORTER_BUSINESS_DATABASE__URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}"}
    )
    try:
        queries = shipped_config["queries"]
        # Queries run concurrently on their own schedules: wait until every one has succeeded once.
        wait_until(
            lambda: all(
                sample(exporter.scrape()[0], "business_query_last_success_timestamp_seconds", {"query": name})
                is not None
                for name in queries
            )
        )
        body, _ = exporter.scrape()
        assert sample(body, "business_users", {"tier": "free"}) > 0
        assert sample(body, "business_query_errors_total", {"query": "mrr"}) == 0
    finally:
        exporter.stop()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"database": {"url": "postgresql://ops:pw@db/platform"}},
            "database.url: expected no secret in the file; set EXPORTER_BUSINESS_DATABASE__URL",
        ),
        ({"queries": {}}, "queries: expected at least one query"),
        (
            {"queries": {"q": {"sql": "SELECT :yesterday AS value", "metrics": {"m": {}}}}},
            "queries.q: expected bind parameters",
        ),
        (
            {
                "queries": {
                    "a": {"sql": "SELECT 1 AS value", "metrics": {"m": {}}},
                    "b": {"sql": "SELECT 2 AS value", "metrics": {"m": {}}},
                }
            },
            "queries.b.metrics.m: expected a metric not already in queries.a",
        ),
    ],
)
def test_bad_config_stops_start_up_with_one_line(tmp_path: Path, config: dict[str, object], message: str) -> None:
    path = write_config(tmp_path / "business.yml", config)
    code, _, stderr = run_cli("business", "--config", str(path), "serve")
    assert code == 2
    assert stderr.count("\n") == 1
    assert stderr.startswith(f"config error in {path}: {message}")
