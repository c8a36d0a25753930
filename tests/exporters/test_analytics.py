"""Computed business metrics (retention, MRR movements, revenue retention, ARPU, trials): the shipped input
SQL plus the pure core against a brute-force reference, on generated platforms, on SQLite and PostgreSQL;
the identities the definitions promise; the exporter serving them; their config checks."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporters.business import cohorts
from exporters.business.analytics import CALCULATORS, calculate, check_spec, metric_specs, runner
from exporters.business.cohorts import month_start, week_start
from exporters.business.exporter import BusinessExporter
from exporters.business.queries import QueryResultError, QuerySpec, Sample, parameter_values, utc_now
from exporters.business.schema import SUBSCRIPTION_STATUSES, metadata, sessions, subscriptions, users
from exporters.business.settings import ENV_PREFIX, BusinessSettings
from exporters.database import read_only_engine
from service_kit.config import load_settings
from service_kit.tiers import PAID_TIERS
from tests.exporters.analytics_reference import Key, reference
from tests.servers import PostgresServer

SHIPPED = load_settings(BusinessSettings, "config/exporters/business.yml", ENV_PREFIX, {})
COMPUTED = {name: spec for name, spec in SHIPPED.queries.items() if spec.compute}
SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)


# Generated platforms ------------------------------------------------------------------------------------


@st.composite
def moments(draw: st.DrawFn, now: datetime) -> datetime:
    """A time around `now`: anywhere in the last 14 months (a little in the future too), or on a period
    boundary, or a second either side of one, where off-by-one mistakes live."""
    if draw(st.booleans()):
        return now + timedelta(seconds=draw(st.integers(-430 * 86_400, 3 * 86_400)))
    start = week_start if draw(st.booleans()) else month_start
    boundary = start(now, draw(st.integers(-1, 13)))
    return boundary + draw(st.sampled_from([-SECOND, timedelta(0), SECOND]))


@st.composite
def platforms(draw: st.DrawFn) -> dict[str, Any]:
    """A small platform: users, their sessions and subscription rows (trials, overlaps and odd rows too)."""
    now = draw(
        st.one_of(
            st.datetimes(datetime(2025, 1, 1), datetime(2027, 12, 31)).map(lambda t: t.replace(microsecond=0)),
            st.sampled_from([datetime(2026, 3, 2), datetime(2026, 11, 30, 23, 59, 59), datetime(2027, 1, 1)]),
        )
    )
    user_rows, session_rows, subscription_rows = [], [], []
    for user_id in range(1, draw(st.integers(0, 12)) + 1):
        user_rows.append({"id": user_id, "signed_up_at": draw(moments(now)), "tier": "free"})
        for _ in range(draw(st.integers(0, 4))):
            started = draw(moments(now))
            lasted = draw(st.sampled_from([0, 600, 3 * 86_400, 8 * 86_400, 15 * 86_400, -3600])) * SECOND
            session_rows.append({"user_id": user_id, "started_at": started, "last_activity_at": started + lasted})
        for _ in range(draw(st.integers(0, 4))):
            started = draw(moments(now))
            lasted = draw(st.sampled_from([0, 1, 20, 31, 45, 100, 400])) * DAY  # 0: a row that never ran
            ended = draw(st.one_of(st.none(), moments(now), st.just(started + lasted)))
            amount = (
                draw(st.sampled_from([0, 2900, 9900, 49900])) if draw(st.booleans()) else draw(st.integers(1, 10**7))
            )
            subscription_rows.append(
                {
                    "user_id": user_id,
                    "plan": draw(st.sampled_from([*PAID_TIERS, "legacy"])),
                    "status": draw(st.sampled_from(SUBSCRIPTION_STATUSES)),
                    "monthly_amount_usd": Decimal(amount) / 100,
                    "started_at": started,
                    "ended_at": ended,
                }
            )
    return {"now": now, "users": user_rows, "sessions": session_rows, "subscriptions": subscription_rows}


def by_key(samples: list[Sample], spec: QuerySpec) -> dict[Key, float]:
    specs = metric_specs(spec)
    found: dict[Key, float] = {}
    for name, labels, value in samples:
        k = (name, tuple(sorted(zip(specs[name].labels, labels, strict=True))))
        assert k not in found, f"{k} published twice"
        found[k] = value
    return found


def computed_figures(engine: sqlalchemy.Engine, now: datetime) -> dict[Key, float]:
    found: dict[Key, float] = {}
    for spec in COMPUTED.values():
        found.update(by_key(runner(engine, spec, clock=lambda: now)(), spec))
    return found


def load(writer: sqlalchemy.Engine, platform: dict[str, Any]) -> None:
    with writer.begin() as db:
        for table in (subscriptions, sessions, users):
            db.execute(table.delete())
        for table in (users, sessions, subscriptions):
            if platform[table.name]:
                db.execute(table.insert(), platform[table.name])


def assert_matches_reference(reader: sqlalchemy.Engine, platform: dict[str, Any]) -> None:
    expected = reference(platform["users"], platform["sessions"], platform["subscriptions"], platform["now"])
    found = computed_figures(reader, platform["now"])
    assert sorted(found) == sorted(expected)  # the same figures exist: absent ones are absent, not 0
    assert found == pytest.approx(expected, rel=1e-12, abs=1e-9)


class Database:
    """A reference-schema database written by one engine and read by the exporter's read-only one."""

    def __init__(self, url: str) -> None:
        self.writer = sqlalchemy.create_engine(url)
        metadata.drop_all(self.writer)
        metadata.create_all(self.writer)
        self.reader = read_only_engine(url, 10)

    def close(self) -> None:
        self.reader.dispose()
        self.writer.dispose()


@pytest.fixture(scope="module")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path_factory.mktemp('analytics') / 'platform.sqlite3'}")
    yield database
    database.close()


@pytest.fixture(scope="module")
def postgres_database(postgres_server: PostgresServer) -> Iterator[Database]:
    database = Database(postgres_server.fresh_database("analytics"))
    yield database
    database.close()


# Each example writes a database: no per-example deadline; big platforms are fine.
PROPERTY: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@settings(max_examples=80, **PROPERTY)
@given(platform=platforms())
def test_every_computed_figure_matches_the_row_by_row_reference_on_sqlite(
    sqlite_database: Database, platform: dict[str, Any]
) -> None:
    load(sqlite_database.writer, platform)
    assert_matches_reference(sqlite_database.reader, platform)


@pytest.mark.integration
@settings(max_examples=60, **PROPERTY)
@given(platform=platforms())
def test_every_computed_figure_matches_the_row_by_row_reference_on_postgresql(
    postgres_database: Database, platform: dict[str, Any]
) -> None:
    load(postgres_database.writer, platform)
    assert_matches_reference(postgres_database.reader, platform)


# What the definitions promise, on the core alone (no database: many more cases) ----------------------


def core_figures(platform: dict[str, Any]) -> dict[Key, float]:
    """The core on the whole tables, as if every input select returned everything."""
    now = platform["now"]
    first_paid: dict[int, datetime] = {}
    for row in platform["subscriptions"]:
        if row["monthly_amount_usd"] > 0 and (row["ended_at"] is None or row["ended_at"] > row["started_at"]):
            first_paid[row["user_id"]] = min(first_paid.get(row["user_id"], row["started_at"]), row["started_at"])
    history = [{"first_signup_at": min((u["signed_up_at"] for u in platform["users"]), default=None)}]
    signups = [{"user_id": u["id"], "signed_up_at": u["signed_up_at"]} for u in platform["users"]]
    rows = {
        "weekly_retention": {"signups": signups, "activity": platform["sessions"], "history": history},
        "revenue": {
            "subscriptions": platform["subscriptions"],
            "first_paid": [{"user_id": u, "first_paid_at": t} for u, t in first_paid.items()],
            "history": history,
        },
        "trial_conversion": {"trials": platform["subscriptions"], "history": history},
    }
    found: dict[Key, float] = {}
    for spec in COMPUTED.values():
        found.update(by_key(calculate(spec.compute, rows[spec.compute], now), spec))
    return found


def labelled(figures: dict[Key, float], metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (name, labels), value in figures.items() if name == metric}


@settings(max_examples=100, deadline=None)
@given(platform=platforms())
def test_the_core_keeps_its_promises(platform: dict[str, Any]) -> None:
    """Opening + gains - losses = closing; ratios in range; week 0 is 100%; only cells that happened exist;
    exactly the current period is in progress; nothing is NaN; and the core alone agrees with the reference
    (so the selects only narrow the rows, they decide nothing)."""
    figures = core_figures(platform)
    assert figures == pytest.approx(
        reference(platform["users"], platform["sessions"], platform["subscriptions"], platform["now"]),
        rel=1e-12,
        abs=1e-9,
    )
    assert not any(math.isnan(value) for value in figures.values())
    opening = labelled(figures, "business_mrr_opening_usd")
    for labels, value in opening.items():
        month = dict(labels)
        moved = {
            movement: figures[("business_mrr_movement_usd", tuple(sorted({**month, "movement": movement}.items())))]
            for movement in cohorts.MOVEMENTS
        }
        gains = sum(moved[m] for m in cohorts.GAINS)
        losses = sum(moved[m] for m in cohorts.LOSSES)
        assert value + gains - losses == pytest.approx(figures[("business_mrr_closing_usd", labels)], abs=1e-6)
        assert all(amount >= 0 for amount in moved.values())
    for metric in ("business_gross_revenue_retention_ratio", "business_gross_revenue_retention_12m_ratio"):
        assert all(0 <= value <= 1 for value in labelled(figures, metric).values())
    for labels, value in labelled(figures, "business_retention_ratio").items():
        cell = dict(labels)
        assert 0 <= value <= 1
        assert int(cell["week"]) <= int(cell["cohort"])  # young cells do not exist
        assert cell["in_progress"] == ("true" if cell["week"] == cell["cohort"] else "false")
        if cell["week"] == "0":
            assert value == 1
    for metric in ("business_mrr_opening_usd", "business_trials_ended", "business_cohort_users"):
        for labels in labelled(figures, metric):
            period = dict(labels).get("month", dict(labels).get("cohort"))
            assert dict(labels)["in_progress"] == ("true" if period == "0" else "false")


# Examples worth naming ----------------------------------------------------------------------------------


NOW = datetime(2026, 12, 2, 15, 0)  # a Wednesday


def test_a_cohort_grid_is_a_triangle_with_the_current_week_in_progress() -> None:
    signups = [{"user_id": c, "signed_up_at": week_start(NOW, c) + timedelta(days=1)} for c in range(12)]
    history = [{"first_signup_at": signups[-1]["signed_up_at"]}]
    samples = calculate("weekly_retention", {"signups": signups, "activity": [], "history": history}, NOW)
    cells = {labels: value for name, labels, value in samples if name == "business_retention_ratio"}
    assert len(cells) == 78  # 12 + 11 + ... + 1 of the 144
    assert cells[("0", "0", "true")] == 1.0
    assert cells[("11", "1", "false")] == 0.0  # nobody came back: a true 0, the week happened
    assert ("1", "2", "false") not in cells and ("1", "2", "true") not in cells  # too young: absent
    assert {labels for labels in cells if labels[2] == "true"} == {(str(c), str(c), "true") for c in range(12)}


def test_a_young_platform_has_no_figures_for_the_time_before_its_first_signup() -> None:
    first = NOW - timedelta(days=20)
    samples = calculate(
        "revenue",
        {"subscriptions": [], "first_paid": [], "history": [{"first_signup_at": first}]},
        NOW,
    )
    months = {labels[0] for name, labels, _ in samples if name == "business_mrr_opening_usd"}
    assert months == {"0", "1"}  # December, and November where the history began
    assert ("business_net_revenue_retention_ratio", ("0", "true"), 0.0) not in samples  # over nobody: absent
    assert not [s for s in samples if s[0] == "business_net_revenue_retention_12m_ratio"]


def test_a_customer_who_comes_back_is_a_reactivation_and_a_new_one_is_new() -> None:
    def paid(user: int, started: datetime, ended: datetime | None) -> dict[str, Any]:
        row = {"user_id": user, "plan": "startup", "monthly_amount_usd": Decimal("29.00")}
        return row | {"started_at": started, "ended_at": ended}

    november = month_start(NOW, 1)
    # user 1 paid in the summer and comes back on 2 November; user 2 pays from 4 November, for the first time
    rows = [paid(1, november - timedelta(days=90), november - timedelta(days=60)), paid(1, november + DAY, None)]
    rows.append(paid(2, november + 3 * DAY, None))
    samples = calculate(
        "revenue",
        {
            "subscriptions": rows,
            "first_paid": [
                {"user_id": 1, "first_paid_at": rows[0]["started_at"]},
                {"user_id": 2, "first_paid_at": rows[2]["started_at"]},
            ],
            "history": [{"first_signup_at": NOW - timedelta(days=400)}],
        },
        NOW,
    )
    movements = {
        labels[1]: value for name, labels, value in samples if name == "business_mrr_movement_usd" and labels[0] == "1"
    }
    assert movements == {"new": 29.0, "reactivation": 29.0, "expansion": 0.0, "contraction": 0.0, "churn": 0.0}


# The exporter and the config ----------------------------------------------------------------------------


def test_the_exporter_serves_the_computed_figures_with_their_labels(sqlite_database: Database) -> None:
    signed_up = utc_now() - timedelta(days=30)
    load(
        sqlite_database.writer,
        {"users": [{"id": 1, "signed_up_at": signed_up, "tier": "free"}], "sessions": [], "subscriptions": []},
    )
    exporter = BusinessExporter(sqlite_database.reader, COMPUTED)
    for job in exporter.jobs.values():
        job.run_once()
    value = exporter.registry.get_sample_value
    for query in COMPUTED:
        assert value("business_query_errors_total", {"query": query}) == 0
    cohort = str(cohorts.weeks_ago(signed_up, utc_now()))
    assert value("business_cohort_users", {"cohort": cohort, "in_progress": "false"}) == 1.0
    assert value("business_retention_ratio", {"cohort": cohort, "week": "0", "in_progress": "false"}) == 1.0
    assert value("business_retention_ratio", {"cohort": cohort, "week": "1", "in_progress": "false"}) == 0.0
    assert value("business_retention_ratio", {"cohort": "0", "week": "1", "in_progress": "false"}) is None  # young
    assert value("business_trials_running") == 0.0
    assert value("business_paying_customers", {"tier": "startup"}) == 0.0
    assert value("business_arpu_usd", {"tier": "startup"}) is None  # over nobody


def test_a_computed_query_whose_input_lacks_a_column_fails_with_the_column_named(sqlite_database: Database) -> None:
    spec = QuerySpec(
        compute="trial_conversion",
        inputs={"trials": "SELECT user_id, started_at FROM subscriptions", "history": "SELECT 1 AS x"},
    )
    load(sqlite_database.writer, {"users": [], "sessions": [], "subscriptions": []})
    with pytest.raises(QueryResultError, match="input history: no column 'first_signup_at'"):
        runner(sqlite_database.reader, spec)()


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (QuerySpec(compute="cohorts"), "compute: one of revenue, trial_conversion, weekly_retention"),
        (
            QuerySpec(compute="trial_conversion", inputs={"trials": "SELECT 1"}),
            "inputs trials, history for calculator trial_conversion, got trials",
        ),
        (
            QuerySpec(
                compute="trial_conversion", sql="SELECT 1", inputs=dict.fromkeys(("trials", "history"), "SELECT 1")
            ),
            "no sql or metrics with compute",
        ),
        (
            QuerySpec(compute="trial_conversion", inputs={"trials": "SELECT :since", "history": "SELECT 1"}),
            "inputs.trials: bind parameters",
        ),
        (QuerySpec(sql="SELECT 1 AS value", inputs={"x": "SELECT 1"}), "inputs only with compute"),
        (QuerySpec(sql="SELECT :week_start_3 AS value", metrics=CALCULATORS["revenue"].metrics), None),
    ],
)
def test_computed_query_specs_are_checked_at_start_up(spec: QuerySpec, problem: str | None) -> None:
    found = check_spec(spec)
    assert found == problem if problem is None else problem in (found or "")


def test_shipped_computed_queries_pass_their_checks_and_publish_distinct_metrics() -> None:
    assert sorted(spec.compute for spec in COMPUTED.values()) == sorted(CALCULATORS)
    assert all(check_spec(spec) is None for spec in COMPUTED.values())
    names = [metric for spec in SHIPPED.queries.values() for metric in metric_specs(spec)]
    assert len(names) == len(set(names))


def test_calendar_bind_parameters_are_period_starts() -> None:
    values = parameter_values(["week_start_0", "week_start_11", "month_start_0", "month_start_12"], NOW)
    assert values == {
        "week_start_0": datetime(2026, 11, 30),
        "week_start_11": datetime(2026, 9, 14),
        "month_start_0": datetime(2026, 12, 1),
        "month_start_12": datetime(2025, 12, 1),
    }
