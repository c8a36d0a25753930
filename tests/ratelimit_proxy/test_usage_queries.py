"""The usage questions (ratelimit_proxy/usage_queries.py) against a brute-force reference computed row by
row in Python, on SQLite and PostgreSQL, over generated rollups; and the admin routes that ask them."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporters.business.schema import LATENCY_BUCKETS_MS, STATUS_CLASSES, api_usage_rollups
from ratelimit_proxy.admin import create_admin_app
from ratelimit_proxy.app import create_app
from ratelimit_proxy.settings import ProxySettings, TierSettings, UsageSettings
from ratelimit_proxy.usage import ANONYMOUS, BUCKET_COLUMNS
from ratelimit_proxy.usage_queries import (
    Period,
    next_tier,
    p95_bound_ms,
    tier_usage,
    top_customers,
    upgrade_candidates,
)
from service_kit.settings import DatabaseSettings
from service_kit.tiers import TIERS
from tests.ratelimit_proxy.conftest import admin_token
from tests.servers import PostgresServer
from tests.service_kit.service_statements import assert_readiness_probe_counted, statement_series

START = datetime(2026, 11, 30, 22, 50)  # the generated hours cross an hour and a UTC day
AI_ROUTES = ["/api/ai/*", "/api/ai/complete"]
ROUTES = [*AI_ROUTES, "/api/v1/*", "other"]
KEYS = [ANONYMOUS, "key-a", "key-b", "key-c", "key-d", "key-e"]
TIERS_UNDER_TEST = {  # small quotas, so generated peaks fall below, near and over them
    "free": TierSettings(burst_per_second=5, per_minute=20, per_hour=60, ai_per_day=40),
    "startup": TierSettings(burst_per_second=10, per_minute=50, per_hour=150, ai_per_day=100),
    "professional": TierSettings(burst_per_second=20, per_minute=100, per_hour=300, ai_per_day=200),
    "enterprise": TierSettings(burst_per_second=50, per_minute=500, per_hour=1500, ai_per_day=1000),
}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlalchemy.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('usage') / 'platform.sqlite3'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.fresh_database("usage_queries")
    engine = sqlalchemy.create_engine(url)
    api_usage_rollups.create(engine)
    yield engine
    engine.dispose()


@st.composite
def rollup_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows as the proxy writes them: unique keys, cumulative buckets, refusals only among 4xx."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for _ in range(draw(st.integers(0, 60))):
        minute = START + timedelta(minutes=draw(st.integers(0, 150)))
        key_id = draw(st.sampled_from(KEYS))
        route = draw(st.sampled_from(ROUTES))
        status = draw(st.sampled_from(STATUS_CLASSES))
        calls = draw(st.integers(1, 45))
        cumulative = sorted(draw(st.lists(st.integers(0, calls), min_size=4, max_size=4)))
        rows[(minute, key_id, route, status)] = {
            "minute": minute,
            "key_id": key_id,
            "route": route,
            "status_class": status,
            "tier": draw(st.sampled_from(TIERS[:2])) if key_id == "key-e" else TIERS[KEYS.index(key_id) % 4],
            "owner": f"owner of {key_id}",
            "calls": calls,
            "refused": draw(st.integers(0, calls)) if status == "4xx" else 0,
            "latency_sum_ms": draw(st.integers(0, 100_000)) / 8,  # exact in binary and in NUMERIC(14, 3)
            "latency_max_ms": draw(st.integers(0, 8000)) / 8,
            **dict(zip(BUCKET_COLUMNS, cumulative, strict=True)),
        }
    return list(rows.values())


periods = st.builds(
    lambda start, length: Period(START + timedelta(minutes=start), START + timedelta(minutes=start + length)),
    st.integers(-10, 140),
    st.integers(1, 200),
)


def load(engine: sqlalchemy.Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as connection:
        connection.execute(api_usage_rollups.delete())
        if rows:
            connection.execute(api_usage_rollups.insert(), rows)


# -- the reference: row by row, no SQL -------------------------------------------------------------------


def customer_rows(rows: list[dict[str, Any]], period: Period) -> list[dict[str, Any]]:
    return [r for r in rows if period.since <= r["minute"] < period.until and r["key_id"] != ANONYMOUS]


def latest_identity(rows: list[dict[str, Any]], key_id: str) -> tuple[str, str]:
    mine = [r for r in rows if r["key_id"] == key_id]
    latest = min(mine, key=lambda r: (-r["minute"].timestamp(), r["route"], r["status_class"]))
    return latest["tier"], latest["owner"]


def reference_top(rows: list[dict[str, Any]], period: Period, by: str, limit: int) -> list[dict[str, Any]]:
    rows = customer_rows(rows, period)
    per_key: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = per_key.setdefault(
            r["key_id"],
            {"calls": 0, "errors": 0, "client_errors": 0, "server_errors": 0, "refused": 0, "sum": 0.0, "max": 0.0}
            | dict.fromkeys(BUCKET_COLUMNS, 0),
        )
        entry["calls"] += r["calls"]
        entry["errors"] += r["calls"] if r["status_class"] in ("4xx", "5xx") else 0
        entry["client_errors"] += r["calls"] if r["status_class"] == "4xx" else 0
        entry["server_errors"] += r["calls"] if r["status_class"] == "5xx" else 0
        entry["refused"] += r["refused"]
        entry["sum"] += r["latency_sum_ms"]
        entry["max"] = max(entry["max"], r["latency_max_ms"])
        for column in BUCKET_COLUMNS:
            entry[column] += r[column]
    ranked = sorted(per_key.items(), key=lambda item: (-item[1][by], item[0]))
    answer = []
    for key_id, e in ranked:
        if by == "errors" and e["errors"] == 0:
            continue
        tier, owner = latest_identity(rows, key_id)
        cumulative = [e[c] for c in BUCKET_COLUMNS]
        bound = next(
            (b for b, n in zip(LATENCY_BUCKETS_MS, cumulative, strict=True) if n * 100 >= e["calls"] * 95), None
        )
        answer.append(
            {
                "key_id": key_id,
                "owner": owner,
                "tier": tier,
                **{k: e[k] for k in ("calls", "errors", "client_errors", "server_errors", "refused")},
                "latency_mean_ms": round(e["sum"] / e["calls"], 3),
                "latency_max_ms": e["max"],
                "latency_p95_le_ms": bound,
            }
        )
    return answer[:limit]


def reference_peaks(rows: list[dict[str, Any]], period: Period) -> dict[tuple[str, str], dict[str, int]]:
    minutes: dict[tuple[str, str], defaultdict[Any, int]] = defaultdict(lambda: defaultdict(int))
    hours: dict[tuple[str, str], defaultdict[Any, int]] = defaultdict(lambda: defaultdict(int))
    ai_days: dict[tuple[str, str], defaultdict[Any, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in customer_rows(rows, period):
        who = (r["key_id"], r["tier"])
        minutes[who][r["minute"]] += r["calls"]
        hours[who][r["minute"].replace(minute=0)] += r["calls"]
        if r["route"] in AI_ROUTES:
            ai_days[who][r["minute"].date()] += r["calls"]
        totals[who][0] += r["calls"]
        totals[who][1] += r["refused"]
    return {
        who: {
            "calls": totals[who][0],
            "refused": totals[who][1],
            "minute": max(minutes[who].values()),
            "hour": max(hours[who].values()),
            "ai-day": max(ai_days[who].values(), default=0),
        }
        for who in minutes
    }


QUOTA_OF = {"minute": "per_minute", "hour": "per_hour", "ai-day": "ai_per_day"}


def reference_candidates(rows: list[dict[str, Any]], period: Period, near: int, limit: int) -> list[dict[str, Any]]:
    answer = []
    for (key_id, tier), peak in reference_peaks(rows, period).items():
        limits = TIERS_UNDER_TEST[tier]
        quotas = {window: getattr(limits, setting) for window, setting in QUOTA_OF.items()}
        if not peak["refused"] and not any(peak[w] * 100 >= quotas[w] * near for w in quotas):
            continue
        ratio = max(peak[w] / quotas[w] for w in quotas)
        windows = [
            {"window": w, "quota": q, "peak": peak[w], "ratio": round(peak[w] / q, 4)} for w, q in quotas.items()
        ]
        entry = {"key_id": key_id, "owner": f"owner of {key_id}", "tier": tier, "next_tier": next_tier(tier)}
        entry |= {"calls": peak["calls"], "refused": peak["refused"], "ratio": ratio, "windows": windows}
        answer.append(entry)
    answer.sort(key=lambda e: (-e["ratio"], -e["refused"], e["key_id"], e["tier"]))
    for entry in answer:
        entry["peak_ratio"] = round(entry.pop("ratio"), 4)
    return answer[:limit]


def reference_tiers(rows: list[dict[str, Any]], period: Period, near: int) -> list[dict[str, Any]]:
    peaks = reference_peaks(rows, period)
    answer = []
    for tier in TIERS:
        mine = [p for (_, t), p in peaks.items() if t == tier]
        limits = TIERS_UNDER_TEST[tier]
        windows = []
        for window, setting in QUOTA_OF.items():
            quota = getattr(limits, setting)
            ratios = [p[window] / quota for p in mine]
            windows.append(
                {
                    "window": window,
                    "quota": quota,
                    "peak": max((p[window] for p in mine), default=0),
                    "mean_peak_ratio": pytest.approx(sum(ratios) / len(ratios), abs=1e-4) if ratios else None,
                    "keys_near_limit": sum(1 for p in mine if p[window] * 100 >= quota * near),
                }
            )
        answer.append(
            {
                "tier": tier,
                "keys": len(mine),
                "calls": sum(p["calls"] for p in mine),
                "refused": sum(p["refused"] for p in mine),
                "keys_refused": sum(1 for p in mine if p["refused"]),
                "windows": windows,
            }
        )
    return answer


# -- the properties ----------------------------------------------------------------------------------------

EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@EXAMPLES
@given(rows=rollup_rows(), period=periods, by=st.sampled_from(["calls", "errors"]), limit=st.integers(1, 6))
def test_top_customers_match_the_reference(
    engine: sqlalchemy.Engine, rows: list[dict[str, Any]], period: Period, by: str, limit: int
) -> None:
    load(engine, rows)
    with engine.connect() as connection:
        assert top_customers(connection, period, by, limit) == reference_top(rows, period, by, limit)  # type: ignore[arg-type]


@EXAMPLES
@given(rows=rollup_rows(), period=periods, near=st.sampled_from([1, 50, 80, 100]), limit=st.integers(1, 8))
def test_upgrade_candidates_match_the_reference(
    engine: sqlalchemy.Engine, rows: list[dict[str, Any]], period: Period, near: int, limit: int
) -> None:
    load(engine, rows)
    with engine.connect() as connection:
        found = upgrade_candidates(connection, period, TIERS_UNDER_TEST, AI_ROUTES, near, limit)
    assert found == reference_candidates(rows, period, near, limit)


@EXAMPLES
@given(rows=rollup_rows(), period=periods, near=st.sampled_from([1, 50, 80, 100]))
def test_usage_per_tier_matches_the_reference(
    engine: sqlalchemy.Engine, rows: list[dict[str, Any]], period: Period, near: int
) -> None:
    load(engine, rows)
    with engine.connect() as connection:
        assert tier_usage(connection, period, TIERS_UNDER_TEST, AI_ROUTES, near) == reference_tiers(rows, period, near)


def test_a_peak_exactly_at_the_near_share_counts_as_near(engine: sqlalchemy.Engine) -> None:
    """16 calls in a minute on a 20-a-minute tier is 80%: integers, not 0.8 * 20 in floating point."""
    base = {
        "minute": START,
        "key_id": "key-a",
        "route": "other",
        "status_class": "2xx",
        "tier": "free",
        "owner": "acme",
        "calls": 16,
        "refused": 0,
        "latency_sum_ms": 16.0,
        "latency_max_ms": 1.0,
        **dict.fromkeys(BUCKET_COLUMNS, 16),
    }
    load(engine, [base])
    period = Period(START, START + timedelta(hours=1))
    with engine.connect() as connection:
        (candidate,) = upgrade_candidates(connection, period, TIERS_UNDER_TEST, AI_ROUTES, 80, 10)
        assert candidate["windows"][0] == {"window": "minute", "quota": 20, "peak": 16, "ratio": 0.8}
        assert upgrade_candidates(connection, period, TIERS_UNDER_TEST, AI_ROUTES, 81, 10) == []


@pytest.mark.parametrize(
    ("calls", "cumulative", "expected"),
    [(100, [95, 95, 95, 100], 25), (100, [94, 95, 95, 100], 100), (100, [0, 0, 0, 94], None), (0, [0, 0, 0, 0], 25)],
)
def test_p95_bound_is_the_first_bucket_holding_95_percent(
    calls: int, cumulative: list[int], expected: int | None
) -> None:
    assert p95_bound_ms(calls, cumulative) == expected


def test_next_tier_follows_the_platform_order() -> None:
    assert [next_tier(t) for t in TIERS] == [*TIERS[1:], None]
    assert next_tier("legacy") is None


# -- the admin routes ------------------------------------------------------------------------------------


@pytest.fixture
def admin_usage(
    settings_for: Callable[..., ProxySettings], database: DatabaseSettings, tmp_path: Path
) -> Iterator[tuple[FlaskClient, dict[str, str], str]]:
    """An admin app reading a SQLite platform database (no rollup written yet), and admin headers."""
    sqlite3.connect(tmp_path / "platform.sqlite3").close()
    url = f"sqlite:///{tmp_path / 'platform.sqlite3'}"
    settings = settings_for(database=database, usage=UsageSettings(database_url=url))
    app = create_admin_app(settings)
    yield app.test_client(), {"Authorization": f"Bearer {admin_token(database.url)}"}, url
    app.extensions["ratelimit_proxy"].close()


USAGE_PATHS = ["/api/v1/usage/top-customers", "/api/v1/usage/upgrade-candidates", "/api/v1/usage/tiers"]


def test_usage_routes_answer_from_the_rows_the_proxy_wrote(
    admin_usage: tuple[FlaskClient, dict[str, str], str], settings_for: Callable[..., ProxySettings]
) -> None:
    client, headers, url = admin_usage
    for path in USAGE_PATHS[:2]:  # before any rollup: empty answers, not errors
        answer = client.get(path, headers=headers)
        assert (answer.status_code, answer.get_json()["data"]) == (200, [])
    tiers = client.get("/api/v1/usage/tiers", headers=headers).get_json()["data"]
    assert [t["tier"] for t in tiers] == list(TIERS) and all(t["keys"] == 0 for t in tiers)

    from ratelimit_proxy.settings import StaticKey
    from service_kit.requests import hash_token

    static = [StaticKey(sha256=hash_token("vbx_admin_usage"), tier="free", owner="acme")]
    proxy = create_app(settings_for(usage=UsageSettings(database_url=url, flush_seconds=3600), static_keys=static))
    proxy_client = proxy.test_client()
    statuses = [
        proxy_client.get("/api/v1/users", headers={"X-API-Key": "vbx_admin_usage"}).status_code for _ in range(7)
    ]
    proxy.extensions["ratelimit_proxy"].close()  # the last flush
    assert statuses.count(429) >= 2  # free: 5 a second

    top = client.get("/api/v1/usage/top-customers?by=errors&limit=5", headers=headers).get_json()
    assert top["by"] == "errors" and top["since"].endswith("Z")
    (acme,) = top["data"]
    assert (acme["key_id"], acme["owner"], acme["tier"]) == (hash_token("vbx_admin_usage"), "acme", "free")
    assert acme["calls"] == 7 and acme["refused"] == acme["errors"] == statuses.count(429)
    (candidate,) = client.get("/api/v1/usage/upgrade-candidates", headers=headers).get_json()["data"]
    assert candidate["next_tier"] == "startup" and candidate["refused"] == statuses.count(429)
    free = client.get("/api/v1/usage/tiers?hours=1&near_percent=1", headers=headers).get_json()["data"][0]
    assert (free["tier"], free["keys"], free["calls"], free["keys_refused"]) == ("free", 1, 7, 1)
    older = client.get("/api/v1/usage/top-customers?until=2020-01-01T00:00:00Z", headers=headers).get_json()
    assert older["data"] == [] and older["until"] == "2020-01-01T00:00:00Z" and older["since"] == "2019-12-31T00:00:00Z"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("hours=0", "hours"),
        ("hours=745", "hours"),
        ("limit=101", "limit"),
        ("by=latency", "by"),
        ("until=yesterday", "until"),
        ("path=/x", "path"),
    ],
)
def test_usage_query_parameters_are_bounded(
    admin_usage: tuple[FlaskClient, dict[str, str], str], query: str, field: str
) -> None:
    client, headers, _ = admin_usage
    answer = client.get(f"/api/v1/usage/top-customers?{query}", headers=headers)
    assert answer.status_code == 422
    assert field in answer.get_json()["error"]["details"]


def test_usage_routes_need_an_admin(
    admin_usage: tuple[FlaskClient, dict[str, str], str], database: DatabaseSettings
) -> None:
    client, _, _ = admin_usage
    viewer = {"Authorization": f"Bearer {admin_token(database.url, role='viewer')}"}
    for path in USAGE_PATHS:
        assert client.get(path).status_code == 401
        assert client.get(path, headers=viewer).status_code == 403


def test_usage_routes_are_404_when_usage_is_off(
    settings_for: Callable[..., ProxySettings], database: DatabaseSettings
) -> None:
    app = create_admin_app(settings_for(database=database))
    headers = {"Authorization": f"Bearer {admin_token(database.url)}"}
    try:
        for path in USAGE_PATHS:
            answer = app.test_client().get(path, headers=headers)
            assert answer.status_code == 404 and "usage.database_url" in answer.get_json()["error"]["message"]
    finally:
        app.extensions["ratelimit_proxy"].close()


def test_usage_routes_are_503_while_the_database_is_down(
    settings_for: Callable[..., ProxySettings], database: DatabaseSettings
) -> None:
    settings = settings_for(database=database)
    down = dataclasses.replace(settings, usage=UsageSettings(database_url="postgresql+psycopg://x@127.0.0.1:1/none"))
    app = create_admin_app(down)
    headers = {"Authorization": f"Bearer {admin_token(database.url)}"}
    try:
        answer = app.test_client().get("/api/v1/usage/tiers", headers=headers)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    finally:
        app.extensions["ratelimit_proxy"].close()


def test_admin_usage_queries_are_timed_by_the_kit_on_the_usage_database(
    admin_usage: tuple[FlaskClient, dict[str, str], str],
) -> None:
    client, headers, _url = admin_usage
    assert_readiness_probe_counted(client.application)  # the admin records' own database
    assert client.get(USAGE_PATHS[2], headers=headers).status_code == 200
    assert sum(statement_series(client.application, "usage").values()) > 0
