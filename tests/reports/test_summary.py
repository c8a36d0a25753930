"""The usage summaries (reports_service/summary.py): a report read through them gives the minute rows'
answer, checked against a brute-force computation row by row in Python on generated rollups (keys whose
tier changes, rows that arrive after a refresh, ranges with partial hours, partial days and today), on
SQLite and a real PostgreSQL; the planner's pieces tile the range and leave at most the partial hours to
the minute rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, delete, event, select, update

from exporters.business.schema import api_usage_rollups
from reports_service.query import run_report
from reports_service.scheduler import spec_adapter
from reports_service.summary import (
    DAY,
    HOUR,
    SUMMARIES,
    Summary,
    ceil_to,
    covered_through,
    floor_to,
    plan,
    refresh,
    summary_metadata,
    summary_state,
)
from tests.servers import PostgresServer

BASE = datetime(2026, 11, 30)  # naive UTC, as the rollups store it
SETTLE = timedelta(minutes=2)
KEYS = {"k1": "customer-1", "k2": "customer-2", "k3": "customer-3"}  # key id: owner
TIERS = ("free", "professional")
ROUTES = ("/api/v1/users", "other")
STATUSES = ("2xx", "4xx", "5xx")
MEASURES = ("calls", "refused", "server_errors", "client_errors", "keys", "max_latency_ms", "avg_latency_ms")
DIMENSIONS = ("owner", "key_id", "tier", "route", "status_class")


class Platform:
    """A platform database with only the rollups and the summaries, emptied before each example."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":  # each example commits a dozen times: no fsync for scratch data
            event.listen(self.engine, "connect", lambda connection, _: connection.execute("PRAGMA synchronous = OFF"))
        api_usage_rollups.create(self.engine, checkfirst=True)
        summary_metadata.create_all(self.engine)

    def reset(self) -> None:
        with self.engine.begin() as connection:
            for table in (api_usage_rollups, summary_state, *(summary.table for summary in SUMMARIES)):
                connection.execute(delete(table))


@pytest.fixture(scope="module")
def sqlite_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = Platform(f"sqlite:///{tmp_path_factory.mktemp('summary') / 'platform.sqlite3'}")
    yield platform
    platform.engine.dispose()


@pytest.fixture(scope="module")
def postgres_platform(postgres_server: PostgresServer) -> Iterator[Platform]:
    platform = Platform(postgres_server.fresh_database("reports_summary"))
    yield platform
    platform.engine.dispose()


# Generated rollups, refreshes and reports --------------------------------------------------------------


@st.composite
def minutes_before(draw: st.DrawFn, now: datetime) -> datetime:
    """A minute in the 4 days before ``now``, often a minute either side of an hour or a midnight."""
    if draw(st.booleans()):
        return floor_to(now, timedelta(minutes=1)) - timedelta(minutes=draw(st.integers(1, 4 * 1440)))
    period = draw(st.sampled_from([HOUR, DAY]))
    boundary = floor_to(now, period) - period * draw(st.integers(0, 3 if period == DAY else 40))
    moment = boundary + timedelta(minutes=draw(st.sampled_from([-1, 0, 1])))
    return moment if moment < now else boundary - timedelta(minutes=1)


@st.composite
def rows(draw: st.DrawFn, now: datetime, minimum: datetime | None = None) -> list[dict[str, Any]]:
    """Rollup rows before ``now`` (from ``minimum`` on); a key's tier may differ from row to row."""
    out = []
    for _ in range(draw(st.integers(0, 25))):
        minute = draw(minutes_before(now))
        if minimum is not None and minute < minimum:
            continue
        key_id = draw(st.sampled_from(sorted(KEYS)))
        calls = draw(st.integers(1, 40))
        low = draw(st.integers(0, calls))
        out.append(
            {
                "minute": minute,
                "key_id": key_id,
                "route": draw(st.sampled_from(ROUTES)),
                "status_class": draw(st.sampled_from(STATUSES)),
                "tier": draw(st.sampled_from(TIERS)),
                "owner": KEYS[key_id],
                "calls": calls,
                "refused": draw(st.integers(0, calls)),
                # whole milliseconds: sums are exact in SQLite's REAL and PostgreSQL's NUMERIC alike
                "latency_sum_ms": Decimal(draw(st.integers(0, 10_000))),
                "latency_max_ms": Decimal(draw(st.integers(0, 2_000))),
                "latency_le_25ms": low,
                "latency_le_100ms": low,
                "latency_le_250ms": calls,
                "latency_le_1000ms": calls,
            }
        )
    return out


def _identity(row: dict[str, Any]) -> tuple[Any, ...]:
    return row["minute"], row["key_id"], row["route"], row["status_class"]


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    """Rows, a first refresh, rows that arrive after it (new ones, and calls added to rows it saw, as the
    proxy's upsert does), a second refresh, and the moment the report runs."""
    now = BASE + timedelta(seconds=draw(st.integers(0, 86_399)))
    first = now - timedelta(minutes=draw(st.integers(0, 36 * 60)))
    second = first + (now - first) * draw(st.sampled_from([0, 0.25, 1]))
    early = [row for row in draw(rows(first)) if row["minute"] < first]
    # what a refresh recomputes: from the day before its summaries' end (reports_service.summary.refresh)
    late_from = floor_to(first - SETTLE, DAY) - DAY
    late = draw(rows(second, late_from))
    unique: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in [*early, *late]:
        unique.setdefault(_identity(row), row)
    early_ids = {_identity(row) for row in early}
    return {
        "now": now,
        "first": first if draw(st.booleans()) else None,
        "second": second,
        "early": [row for key, row in unique.items() if key in early_ids],
        "late": [row for key, row in unique.items() if key not in early_ids],
        "bump_from": late_from if draw(st.booleans()) else None,
    }


@st.composite
def specs(draw: st.DrawFn, now: datetime) -> dict[str, Any]:
    start = now - timedelta(seconds=draw(st.integers(60, 5 * 86_400)))
    # to now (today's partial day, and the hours no refresh has reached), or to a moment before it
    end = now if draw(st.booleans()) else start + (now - start) * draw(st.sampled_from([0.3, 0.5, 0.9]))
    spec: dict[str, Any] = {
        "source": "api_usage",
        "dimensions": draw(st.lists(st.sampled_from(DIMENSIONS), max_size=2, unique=True)),
        "measures": draw(st.lists(st.sampled_from(MEASURES), min_size=1, max_size=3, unique=True)),
        "time_range": {"start": f"{start.isoformat()}Z", "end": f"{end.isoformat()}Z"},
        "limit": 10_000,
    }
    grain = draw(st.sampled_from([None, "hour", "day", "week", "month"]))
    if grain:
        spec["time_grain"] = grain
    if draw(st.booleans()):
        field = draw(st.sampled_from(["tier", "owner", "status_class"]))
        values = {"tier": TIERS, "owner": tuple(KEYS.values()), "status_class": STATUSES}[field]
        spec["filters"] = [
            {"field": field, "op": draw(st.sampled_from(["in", "not_in"])), "values": [draw(st.sampled_from(values))]}
        ]
    return spec


# The brute-force reference -------------------------------------------------------------------------------


def _bucket(minute: datetime, grain: str) -> str:
    if grain == "hour":
        return minute.strftime("%Y-%m-%dT%H:00:00")
    if grain == "week":
        return (minute - timedelta(days=minute.weekday())).strftime("%Y-%m-%d")
    return minute.strftime("%Y-%m-01" if grain == "month" else "%Y-%m-%d")


def _measure(name: str, group: list[dict[str, Any]]) -> Any:
    calls = sum(row["calls"] for row in group) if group else None
    if name == "calls":
        return calls
    if name == "refused":
        return sum(row["refused"] for row in group) if group else None
    if name in ("server_errors", "client_errors"):
        status = "5xx" if name == "server_errors" else "4xx"
        return sum(row["calls"] for row in group if row["status_class"] == status) if group else None
    if name == "keys":
        return len({row["key_id"] for row in group})
    if name == "max_latency_ms":
        return float(max(row["latency_max_ms"] for row in group)) if group else None
    assert name == "avg_latency_ms"
    return round(float(sum(row["latency_sum_ms"] for row in group)) / calls, 6) if calls else None


def reference(all_rows: list[dict[str, Any]], spec: dict[str, Any]) -> list[list[Any]]:
    """The report computed row by row from the minute rows."""
    start = datetime.fromisoformat(spec["time_range"]["start"]).astimezone(UTC).replace(tzinfo=None)
    end = datetime.fromisoformat(spec["time_range"]["end"]).astimezone(UTC).replace(tzinfo=None)
    grain, dims = spec.get("time_grain"), spec["dimensions"]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    if not grain and not dims:
        groups[()] = []  # no GROUP BY: one row, over nothing when nothing is in range
    for row in all_rows:
        if not start <= row["minute"] < end:
            continue
        if any((row[f["field"]] in f["values"]) != (f["op"] == "in") for f in spec.get("filters", [])):
            continue
        groups[(*([_bucket(row["minute"], grain)] if grain else []), *(row[d] for d in dims))].append(row)
    return [[*key, *(_measure(m, group) for m in spec["measures"])] for key, group in groups.items()]


def _normal(table: list[list[Any]]) -> list[list[Any]]:
    return sorted(([round(v, 4) if isinstance(v, float) else v for v in row] for row in table), key=repr)


def check_history(platform: Platform, history: dict[str, Any], spec: dict[str, Any]) -> None:
    platform.reset()
    engine = platform.engine
    with engine.begin() as connection:
        if history["early"]:
            connection.execute(api_usage_rollups.insert(), history["early"])
    if history["first"] is not None:
        refresh(engine, history["first"], SETTLE)
    every = [dict(row) for row in history["early"] + history["late"]]
    with engine.begin() as connection:
        if history["late"]:
            connection.execute(api_usage_rollups.insert(), history["late"])
        if history["bump_from"] is not None:
            rollups = api_usage_rollups.c
            late_minutes = rollups.minute >= history["bump_from"]
            connection.execute(update(api_usage_rollups).where(late_minutes).values(calls=rollups.calls + 3))
            for row in every:
                row["calls"] += 3 if row["minute"] >= history["bump_from"] else 0
    refresh(engine, history["second"], SETTLE)
    with engine.connect() as connection:
        ends = dict(connection.execute(select(summary_state.c.summary, summary_state.c.through)).all())
    assert covered_through(engine) == ends  # an error reading them would fall back to minute rows unseen
    parsed = spec_adapter.validate_python(spec)
    now = history["now"].replace(tzinfo=UTC)
    through = run_report(engine, parsed, now, 10_000, 30, daily_summary=True)
    raw = run_report(engine, parsed, now, 10_000, 30, daily_summary=False)
    expected = _normal(reference(every, spec))
    assert _normal(through.rows) == expected
    assert _normal(raw.rows) == expected


# Each example writes a database: no per-example deadline.
PROPERTY: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    history = draw(histories())
    return history, draw(specs(history["now"]))


@settings(max_examples=40, **PROPERTY)
@given(case=cases())
def test_reports_through_the_summaries_match_the_row_by_row_reference_on_sqlite(
    sqlite_platform: Platform, case: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    check_history(sqlite_platform, *case)


@pytest.mark.integration
@settings(max_examples=25, **PROPERTY)
@given(case=cases())
def test_reports_through_the_summaries_match_the_row_by_row_reference_on_postgresql(
    postgres_platform: Platform, case: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    check_history(postgres_platform, *case)


# Named cases -------------------------------------------------------------------------------------------


def _row(minute: datetime, key_id: str, tier: str, calls: int, status: str = "2xx") -> dict[str, Any]:
    return {
        "minute": minute,
        "key_id": key_id,
        "route": "other",
        "status_class": status,
        "tier": tier,
        "owner": KEYS[key_id],
        "calls": calls,
        "refused": 0,
        "latency_sum_ms": Decimal(calls),
        "latency_max_ms": Decimal(1),
        **{f"latency_le_{bucket}ms": calls for bucket in (25, 100, 250, 1000)},
    }


TIER_SPEC = {
    "source": "api_usage",
    "dimensions": ["tier"],
    "measures": ["calls"],
    "time_grain": "day",
    "time_range": {"start": "2026-11-28T00:00:00Z", "end": "2026-11-30T00:00:00Z"},
}


def test_a_key_whose_tier_changed_during_a_day_counts_on_each_tier_as_in_the_minute_rows(
    sqlite_platform: Platform,
) -> None:
    """The old per-day summary grouped a key's day with max(tier): all 10 calls went to 'professional'."""
    sqlite_platform.reset()
    with sqlite_platform.engine.begin() as connection:
        connection.execute(
            api_usage_rollups.insert(),
            [
                _row(datetime(2026, 11, 28, 9), "k1", "free", 4),
                _row(datetime(2026, 11, 28, 15), "k1", "professional", 6),
            ],
        )
    refresh(sqlite_platform.engine, datetime(2026, 11, 30, 12, tzinfo=UTC), SETTLE)
    for dimensions in (["tier"], ["owner", "tier"]):
        spec = spec_adapter.validate_python({**TIER_SPEC, "dimensions": dimensions})
        result = run_report(sqlite_platform.engine, spec, datetime(2026, 11, 30, 12, tzinfo=UTC), 100, 30, True)
        by_tier = {row[-2]: row[-1] for row in result.rows}
        assert by_tier == {"free": 4, "professional": 6}, dimensions


def test_rows_flushed_after_a_refresh_are_counted_once_the_next_refresh_recomputes_their_day(
    sqlite_platform: Platform,
) -> None:
    sqlite_platform.reset()
    engine = sqlite_platform.engine
    with engine.begin() as connection:
        connection.execute(api_usage_rollups.insert(), [_row(datetime(2026, 11, 29, 23, 58), "k1", "free", 5)])
    refresh(engine, datetime(2026, 11, 30, 0, 3, tzinfo=UTC), SETTLE)  # 23:59 was still settling
    assert covered_through(engine)["reports_usage_tier_days"] == datetime(2026, 11, 30)
    with engine.begin() as connection:  # the proxy's late flush: a new row, and calls added to a row
        connection.execute(api_usage_rollups.insert(), [_row(datetime(2026, 11, 29, 23, 59), "k2", "free", 7)])
        connection.execute(update(api_usage_rollups).where(api_usage_rollups.c.key_id == "k1").values(calls=8))
    spec = spec_adapter.validate_python(TIER_SPEC)
    at = datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert run_report(engine, spec, at, 100, 30, True).rows == [["2026-11-29", "free", 5]]  # not yet
    recomputed = refresh(engine, datetime(2026, 11, 30, 0, 8, tzinfo=UTC), SETTLE)
    assert recomputed["reports_usage_tier_days"] == (datetime(2026, 11, 29), datetime(2026, 11, 30))
    assert run_report(engine, spec, at, 100, 30, True).rows == [["2026-11-29", "free", 15]]
    assert run_report(engine, spec, at, 100, 30, False).rows == [["2026-11-29", "free", 15]]


def test_an_hour_is_summarised_only_once_it_ended_the_settle_time_ago(sqlite_platform: Platform) -> None:
    sqlite_platform.reset()
    with sqlite_platform.engine.begin() as connection:
        connection.execute(api_usage_rollups.insert(), [_row(datetime(2026, 11, 30, 8, 30), "k1", "free", 1)])
    refresh(sqlite_platform.engine, datetime(2026, 11, 30, 10, 1, tzinfo=UTC), SETTLE)
    assert covered_through(sqlite_platform.engine)["reports_usage_tier_hours"] == datetime(2026, 11, 30, 9)
    refresh(sqlite_platform.engine, datetime(2026, 11, 30, 10, 2, tzinfo=UTC), SETTLE)
    assert covered_through(sqlite_platform.engine)["reports_usage_tier_hours"] == datetime(2026, 11, 30, 10)


# The planner, pure ---------------------------------------------------------------------------------------

NAMES = {summary.name: summary for summary in SUMMARIES}
EVERY_END = {name: datetime(2026, 11, 30, 20) for name, summary in NAMES.items() if summary.period == HOUR}
EVERY_END.update({name: datetime(2026, 11, 30) for name, summary in NAMES.items() if summary.period == DAY})


def test_the_tier_report_over_30_days_reads_at_most_two_hours_of_minute_rows() -> None:
    start, end = datetime(2026, 10, 31, 20, 21, 39), datetime(2026, 11, 30, 20, 21, 39)
    pieces = plan(start, end, EVERY_END, frozenset({"minute", "tier", "calls", "refused"}), DAY)
    sources = [summary.name if summary else None for summary, _, _ in pieces]
    assert sources == [
        None,
        "reports_usage_tier_hours",
        "reports_usage_tier_days",
        "reports_usage_tier_hours",
        None,
    ]
    assert sum((high - low for summary, low, high in pieces if summary is None), timedelta()) < 2 * HOUR


@pytest.mark.parametrize(
    ("used", "finest", "allowed"),
    [
        ({"tier", "status_class", "calls"}, DAY, {"reports_usage_tier_days", "reports_usage_tier_hours"}),
        ({"owner", "calls"}, DAY, {"reports_usage_owner_days", "reports_usage_owner_hours"}),
        ({"key_id", "calls"}, DAY, {"reports_usage_days"}),  # distinct keys, or a key: only the fine summary
        ({"route", "calls"}, None, {"reports_usage_days"}),
        ({"tier", "calls"}, HOUR, {"reports_usage_tier_hours"}),  # an hourly report never reads days
        ({"route", "calls"}, HOUR, set()),
    ],
)
def test_a_report_reads_only_summaries_with_its_columns_and_its_grain(
    used: set[str], finest: timedelta | None, allowed: set[str]
) -> None:
    pieces = plan(
        datetime(2026, 11, 1, 7, 31), datetime(2026, 11, 30, 18, 2), EVERY_END, frozenset(used | {"minute"}), finest
    )
    assert {summary.name for summary, _, _ in pieces if summary is not None} == allowed


@settings(max_examples=300)
@given(
    start=st.datetimes(datetime(2026, 11, 20), datetime(2026, 12, 2)),
    length=st.timedeltas(timedelta(seconds=1), timedelta(days=9)),
    ends=st.fixed_dictionaries(
        {name: st.none() | st.datetimes(datetime(2026, 11, 18), datetime(2026, 12, 3)) for name in NAMES}
    ),
    finest=st.sampled_from([None, HOUR, DAY]),
)
def test_the_pieces_tile_the_range_and_each_summary_piece_is_whole_periods_it_covers(
    start: datetime, length: timedelta, ends: dict[str, datetime | None], finest: timedelta | None
) -> None:
    through = {name: floor_to(end, NAMES[name].period) for name, end in ends.items() if end is not None}
    end = start + length
    pieces = plan(start, end, through, frozenset({"minute", "tier", "calls"}), finest)
    assert pieces[0][1] == start and pieces[-1][2] == end
    for (_, _, high), (_, low, _) in pairwise(pieces):
        assert high == low
    for summary, low, high in pieces:
        assert low < high
        if summary is not None:
            assert isinstance(summary, Summary)
            assert floor_to(low, summary.period) == low and ceil_to(high, summary.period) == high
            assert high <= through[summary.name]
            assert finest is None or summary.period <= finest
