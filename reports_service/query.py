"""Compile a validated report spec to SQLAlchemy Core and run it against the platform database.

``compile_table`` and ``compile_cohort`` are pure: spec and the moment the report runs in, statements out.
Every identifier in them comes from ``reports_service.catalog``; every value from the spec (filter values,
the time range, the limit) is a bound parameter. ``run_report`` executes them with a time limit and turns
rows into a :class:`Result` (plain Python values: floats, ints, text, None).

Cohorts are two statements, sizes per sign-up week and distinct active accounts per (week, N), combined in
Python into the triangular grid: which cells exist depends on the report's end, not on the data, so a cell
with no activity is 0 and a cell too young to have any is None.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Select, and_, distinct, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.elements import ColumnElement

from exporters.business.schema import sessions, users
from reports_service.catalog import (
    COHORT_DIMENSIONS,
    SOURCES,
    TIME_DIMENSION,
    TimeBucket,
    WholeWeeksBetween,
    usage_source,
)
from reports_service.errors import PlatformUnavailableError, ReportTooExpensiveError
from reports_service.schemas import RetentionCohortsSpec
from reports_service.summary import DAY, HOUR, Piece, columns_of, covered_through, plan, usage_from


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # dimension | measure
    unit: str | None = None


@dataclass
class Result:
    """A report's rows; ``in_progress`` only for cohorts (same shape as the period cells)."""

    title_range: tuple[datetime, datetime]
    columns: list[Column]
    rows: list[list[Any]]
    truncated: bool = False
    in_progress: list[list[bool]] | None = None
    elapsed_ms: float = 0.0
    kind: str = "table"
    chart: str = "bar"
    meta: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        start, end = self.title_range
        return {
            "columns": [{"name": c.name, "kind": c.kind, "unit": c.unit} for c in self.columns],
            "rows": self.rows,
            "in_progress": self.in_progress,
            "range": {"start": iso(start), "end": iso(end)},
            "truncated": self.truncated,
            "elapsed_ms": round(self.elapsed_ms, 3),
        }


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def naive_utc(moment: datetime) -> datetime:
    """The platform tables hold naive UTC timestamps (exporters/business/schema.py)."""
    return moment.astimezone(UTC).replace(tzinfo=None)


# The longest summary period a time grain can be built from (every week and month starts at a UTC midnight).
_FINEST_SUMMARY = {"hour": HOUR, "day": DAY, "week": DAY, "month": DAY}


def usage_columns(spec: Any) -> list[str]:
    """The api_usage_rollups columns an api_usage report reads."""
    source = SOURCES["api_usage"]
    return columns_of(
        *(source.dimensions[name].expression for name in spec.dimensions),
        *(source.measures[name].expression for name in spec.measures),
        *(source.dimensions[condition.field].expression for condition in spec.filters),
    )


def usage_pieces(spec: Any, now: datetime, summaries: Mapping[str, datetime]) -> list[Piece]:
    """Where an api_usage report reads each piece of its range (reports_service.summary.plan)."""
    start, end = spec.time_range.bounds(now)
    finest = _FINEST_SUMMARY.get(spec.time_grain) if spec.time_grain else None
    return plan(naive_utc(start), naive_utc(end), summaries, frozenset(usage_columns(spec)), finest)


def compile_table(
    spec: Any, now: datetime, max_rows: int, summaries: Mapping[str, datetime] | None = None
) -> tuple[Select[Any], list[Column], datetime, datetime]:
    """The SELECT of a table report: grouped by its dimensions, filtered, ordered, limited (one row more
    than returned, to tell a truncated result). ``summaries``: the usage summaries' ends by table, so an
    api_usage report reads what they cover there (reports_service.summary)."""
    source = SOURCES[spec.source]
    start, end = spec.time_range.bounds(now)
    if spec.source == "api_usage" and summaries:
        used = usage_columns(spec)
        source = usage_source(usage_from(usage_pieces(spec, now, summaries), used))
    selected: list[ColumnElement[Any]] = []
    groups: list[ColumnElement[Any]] = []
    columns: list[Column] = []
    labels: dict[str, ColumnElement[Any]] = {}
    if spec.time_grain:
        bucket = TimeBucket(source.time_column, spec.time_grain).label(TIME_DIMENSION)
        selected.append(bucket)
        groups.append(bucket.element)
        labels[TIME_DIMENSION] = bucket
        columns.append(Column(TIME_DIMENSION, "dimension"))
    for name in spec.dimensions:
        dimension = source.dimensions[name]
        labelled = dimension.expression.label(name)
        selected.append(labelled)
        groups.append(dimension.expression)
        labels[name] = labelled
        columns.append(Column(name, "dimension"))
    for name in spec.measures:
        measure = source.measures[name]
        labelled = measure.expression.label(name)
        selected.append(labelled)
        labels[name] = labelled
        columns.append(Column(name, "measure", measure.unit))
    statement = (
        select(*selected)
        .select_from(source.from_clause)
        .where(source.time_column >= naive_utc(start), source.time_column < naive_utc(end))
    )
    for condition in spec.filters:
        expression = source.dimensions[condition.field].expression
        statement = statement.where(
            expression.in_(condition.values) if condition.op == "in" else expression.not_in(condition.values)
        )
    if groups:
        statement = statement.group_by(*groups)
    ordering = [labels[o.field].desc() if o.descending else labels[o.field].asc() for o in spec.order_by]
    if not ordering:  # a stable default: time first, then the first measure, largest first
        ordering = [labels[TIME_DIMENSION].asc()] if spec.time_grain else []
        ordering.append(labels[spec.measures[0]].desc())
    # dimensions last as a tiebreaker, so equal measures come in the same order on every database
    ordering += [labels[name].asc() for name in spec.dimensions]
    statement = statement.order_by(*ordering).limit(min(spec.limit, max_rows) + 1)
    return statement, columns, start, end


def cohort_bounds(spec: RetentionCohortsSpec, now: datetime) -> tuple[datetime, datetime]:
    """The first cohort's Monday and the report's end; the last cohort is the latest full or partial week
    before ``end``."""
    end = (spec.end or now).astimezone(UTC)
    this_monday = datetime(end.year, end.month, end.day, tzinfo=UTC) - timedelta(days=end.weekday())
    first = this_monday - timedelta(weeks=spec.cohorts - 1)
    return first, end


def compile_cohort(spec: RetentionCohortsSpec, now: datetime) -> tuple[Any, Any, datetime, datetime]:
    """Two statements: accounts per sign-up week, and distinct accounts active per (week, N)."""
    first, end = cohort_bounds(spec, now)
    cohort = TimeBucket(users.c.signed_up_at, "week")
    in_range = and_(users.c.signed_up_at >= naive_utc(first), users.c.signed_up_at < naive_utc(end))
    conditions = [in_range]
    for condition in spec.filters:
        expression = COHORT_DIMENSIONS[condition.field]
        conditions.append(
            expression.in_(condition.values) if condition.op == "in" else expression.not_in(condition.values)
        )
    sizes = (
        select(cohort.label("cohort"), func.count(users.c.id).label("users"))
        .where(*conditions)
        .group_by(cohort)
        .order_by(cohort)
    )
    week_n = WholeWeeksBetween(users.c.signed_up_at, sessions.c.started_at)
    active = (
        select(
            cohort.label("cohort"),
            week_n.label("week"),
            func.count(distinct(sessions.c.user_id)).label("active"),
        )
        .select_from(sessions.join(users, sessions.c.user_id == users.c.id))
        .where(
            *conditions,
            sessions.c.started_at >= users.c.signed_up_at,
            sessions.c.started_at < naive_utc(end),
            week_n >= 1,
            week_n < spec.periods,
        )
        .group_by(cohort, week_n)
    )
    return sizes, active, first, end


def cohort_grid(
    spec: RetentionCohortsSpec,
    first: datetime,
    end: datetime,
    sizes: dict[str, int],
    active: dict[tuple[str, int], int],
) -> tuple[list[list[Any]], list[list[bool]]]:
    """Rows ``[cohort, users, week_0 … week_{P-1}]`` with retention ratios, and the in-progress marks.

    Cell (c, N) is None when no member can have finished week N yet (the cohort's Monday + N+1 weeks is
    after ``end``), and in progress while its last possible member has not (Monday + N+2 weeks)."""
    rows: list[list[Any]] = []
    marks: list[list[bool]] = []
    for index in range(spec.cohorts):
        monday = first + timedelta(weeks=index)
        label = monday.strftime("%Y-%m-%d")
        size = sizes.get(label, 0)
        cells: list[Any] = []
        flags: list[bool] = []
        for week in range(spec.periods):
            if monday + timedelta(weeks=week + 1) > end:
                cells.append(None)
                flags.append(False)
                continue
            if size == 0:
                cells.append(None)  # no accounts: a ratio of nothing is no value, not 0
            elif week == 0:
                cells.append(1.0)  # retention of week 0 is 100% by definition
            else:
                cells.append(round(active.get((label, week), 0) / size, 6))
            flags.append(monday + timedelta(weeks=week + 2) > end)
        rows.append([label, size, *cells])
        marks.append(flags)
    return rows, marks


@contextmanager
def time_limit(connection: Any, seconds: float) -> Iterator[None]:
    """Stop a statement that runs past ``seconds``: PostgreSQL's statement_timeout for this transaction,
    SQLite's progress handler (called every 10k virtual machine steps) for this connection."""
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.set_config("statement_timeout", str(round(seconds * 1000)), True)))
        yield
        return
    raw = connection.connection.driver_connection
    deadline = time.monotonic() + seconds
    if isinstance(raw, sqlite3.Connection):
        raw.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
    try:
        yield
    finally:
        if isinstance(raw, sqlite3.Connection):
            raw.set_progress_handler(None, 0)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float):
        return round(value, 6)
    return value


def run_report(
    engine: Engine, spec: Any, now: datetime, max_rows: int, timeout_seconds: float, daily_summary: bool = False
) -> Result:
    """Run ``spec`` as of ``now`` against ``engine`` (the platform database); ``daily_summary``: read the
    usage summaries where they cover the range."""
    started = time.perf_counter()
    through = covered_through(engine) if daily_summary and getattr(spec, "source", "") == "api_usage" else {}
    try:
        with engine.connect() as connection, time_limit(connection, timeout_seconds):
            if isinstance(spec, RetentionCohortsSpec):
                result = _run_cohort(connection, spec, now)
            else:
                result = _run_table(connection, spec, now, max_rows, through)
    except OperationalError as exc:
        message = str(exc.orig).lower()
        if "interrupted" in message or "statement timeout" in message or "canceling statement" in message:
            raise ReportTooExpensiveError(timeout_seconds) from None
        raise PlatformUnavailableError(exc) from None
    result.elapsed_ms = (time.perf_counter() - started) * 1000
    return result


def _run_table(connection: Any, spec: Any, now: datetime, max_rows: int, through: Mapping[str, datetime]) -> Result:
    statement, columns, start, end = compile_table(spec, now, max_rows, through)
    rows = [[_plain(v) for v in row] for row in connection.execute(statement)]
    cap = min(spec.limit, max_rows)
    return Result((start, end), columns, rows[:cap], truncated=len(rows) > cap, chart=spec.chart)


def _run_cohort(connection: Any, spec: RetentionCohortsSpec, now: datetime) -> Result:
    sizes_statement, active_statement, first, end = compile_cohort(spec, now)
    sizes = {row.cohort: int(row.users) for row in connection.execute(sizes_statement)}
    active = {(row.cohort, int(row.week)): int(row.active) for row in connection.execute(active_statement)}
    rows, marks = cohort_grid(spec, first, end, sizes, active)
    columns = [Column("cohort", "dimension"), Column("users", "measure", "count")]
    columns += [Column(f"week_{n}", "measure", "ratio") for n in range(spec.periods)]
    return Result((first, end), columns, rows, in_progress=marks, kind="cohort", chart="heatmap")


def ping(engine: Engine) -> bool:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return True
