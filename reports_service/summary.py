"""Summaries of the usage rollups, so a report over weeks of API usage reads hundreds or thousands of rows,
not a million: tables the reports service keeps in the platform database, next to the minute rows.

Why: a saved report such as "top customers by calls, last 7 days" over 1M minute rows made SQLite walk a
quarter of them through a GROUP BY (about 1.2 s on the loaded bench machine, bench/RESULTS.md), and the
index alone cannot make a GROUP BY cheaper. A per-day summary alone left "calls per day by tier, 30 days"
at 0.7 to 1.4 s: ~1,800 summary rows a day plus the minute rows of the range's two partial days (~33k).

The summaries (``SUMMARIES``), each the rollups' columns grouped by a period and some of the dimensions:
- ``reports_usage_days``: per day, key, route, status class, tier and owner. Every api_usage dimension and
  measure reads it unchanged (``catalog.usage_source``); distinct keys stay exact because ``key_id`` is
  kept, and a key whose tier changed during a day has a row per tier, as in the minute rows.
- ``reports_usage_tier_days`` and ``reports_usage_tier_hours``: per day (hour), tier and status class,
  about 16 rows a day (an hour) however many keys call: what a report over tiers and status classes reads.
- ``reports_usage_owner_days`` and ``reports_usage_owner_hours``: per day (hour), owner, tier and status
  class (~450 rows a day, ~200 an hour in the bench): the "top customers" reports.

How a report uses them (``plan``, pure, and ``usage_from``): the range is cut into pieces, each read from
the coarsest summary that has every column the report uses, whose period the report's time grain can
hold, and that covers that piece: whole days from a day summary, the whole hours of the partial days (and
of today) from an hour summary, and only the rest from the minute rows (under two hours at each end, plus
what the last refresh has not reached). The pieces meet in one UNION ALL that the report's SQL groups like
the table itself, so the answers are those of the minute rows (tests/reports/test_summary.py).

How they are kept (``refresh``, the kit's job ``usage_summary``): per summary and day, one transaction
deletes and recomputes with one INSERT … SELECT the periods from the start of the day before the
summary's end up to the last period that ended ``settle`` ago, and moves the end
(``reports_usage_summary_state``). The day before is recomputed so rows the proxy flushed late (it adds
to minute rows every ``usage.flush_seconds``, and holds them while the database is away) are counted;
``settle`` keeps the last few seconds' flushes out of a period until they are in. Rows that arrive later
than the day before the summary's end are not counted in it. Like a BI tool's persisted models, this
writes tables of its own in the database it reads; with ``platform.daily_summary: false`` the service
only reads, from the minute rows.

These replace ``reports_usage_daily`` (per day, key, route and status class, whose ``max(tier)`` put a
key's whole day on one tier when its tier changed): the previous release still refreshes and reads it
during a rolling release, so it is left in place, unused, for a later release to drop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.sql.selectable import FromClause

from exporters.business.schema import api_usage_rollups

log = logging.getLogger("reports_service.summary")
summary_metadata = MetaData()
COLUMNS = [column.name for column in api_usage_rollups.columns]
DIMENSIONS = ("key_id", "route", "status_class", "tier", "owner")
MEASURES = [c for c in COLUMNS if c not in ("minute", *DIMENSIONS)]  # summed, but latency_max_ms: max
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

summary_state = Table(
    "reports_usage_summary_state",
    summary_metadata,
    Column("summary", String(64), primary_key=True),
    Column("through", DateTime, nullable=False),  # naive UTC; the summary holds the periods before it
)


@dataclass(frozen=True)
class Summary:
    """One summary table: the minute rows grouped by ``period`` (HOUR or DAY) and ``dimensions``."""

    table: Table
    period: timedelta
    dimensions: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def columns(self) -> frozenset[str]:
        return frozenset(column.name for column in self.table.columns)


def _summary(name: str, period: timedelta, dimensions: tuple[str, ...], *indexes: Index) -> Summary:
    """A summary table with the rollups' column types: ``minute`` (the period's start) and the dimensions
    as the primary key, then every measure."""
    kept = ("minute", *dimensions)
    table = Table(
        name,
        summary_metadata,
        *(
            Column(column.name, column.type, primary_key=column.name in kept, nullable=column.nullable)
            for column in api_usage_rollups.columns
            if column.name in kept or column.name in MEASURES
        ),
        *indexes,
    )
    return Summary(table, period, dimensions)


# Coarsest first: ``plan`` tries them in this order.
SUMMARIES: tuple[Summary, ...] = (
    _summary("reports_usage_tier_days", DAY, ("tier", "status_class")),
    _summary("reports_usage_owner_days", DAY, ("owner", "tier", "status_class")),
    _summary(
        "reports_usage_days",
        DAY,
        DIMENSIONS,
        Index("ix_reports_usage_days_minute_owner", "minute", "owner", "tier", "status_class", "calls"),
    ),
    _summary("reports_usage_tier_hours", HOUR, ("tier", "status_class")),
    _summary("reports_usage_owner_hours", HOUR, ("owner", "tier", "status_class")),
)


class PeriodStart(FunctionElement[datetime]):
    """The start of a timestamp's UTC hour or day, stored as the rollups store timestamps."""

    type = DateTime()
    name = "period_start"
    inherit_cache = False  # the period is part of the SQL text, not a bound value

    def __init__(self, column: ColumnElement[Any], period: timedelta) -> None:
        if period not in (HOUR, DAY):
            raise ValueError(f"unknown period {period!r}")
        self.period = period
        super().__init__(column)


@compiles(PeriodStart, "sqlite")
def _period_sqlite(element: PeriodStart, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    text = compiler.process(column, **kw)
    # SQLAlchemy's SQLite DateTime text 'YYYY-MM-DD HH:MM:SS.ffffff', cut: the summaries' periods compare
    # with bound datetimes as text, and a cut is cheaper than strftime's parsing
    if element.period == DAY:
        return f"(substr({text}, 1, 10) || ' 00:00:00.000000')"
    return f"(substr({text}, 1, 13) || ':00:00.000000')"


@compiles(PeriodStart, "postgresql")
def _period_postgresql(element: PeriodStart, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    return f"date_trunc('{'day' if element.period == DAY else 'hour'}', {compiler.process(column, **kw)})"


def floor_to(moment: datetime, period: timedelta) -> datetime:
    """The start of ``moment``'s hour or day."""
    if period == DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil_to(moment: datetime, period: timedelta) -> datetime:
    start = floor_to(moment, period)
    return start if start == moment else start + period


def covered_through(engine: Engine) -> dict[str, datetime]:
    """Each summary's end (naive UTC); empty when there are none (yet)."""
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(summary_state.c.summary, summary_state.c.through)).all()
    except Exception:  # no table yet, or the database is away: the minute rows answer
        return {}
    return {row.summary: row.through for row in rows}


def refresh(
    engine: Engine, now: datetime, settle: timedelta = timedelta(minutes=2)
) -> dict[str, tuple[datetime, datetime]]:
    """Recompute each summary's periods that are not final yet; returns the ranges recomputed, by table.

    One day per transaction: on SQLite a transaction holds the file's write lock, and the proxy's flushes
    wait for it at most ``usage.timeout_seconds`` (3 s); a first build over 30 days of 1M rows took 14 s
    per summary in one (bench/RESULTS.md)."""
    moment = now.astimezone(UTC).replace(tzinfo=None) - settle
    summary_metadata.create_all(engine, checkfirst=True)
    done: dict[str, tuple[datetime, datetime]] = {}
    for summary in SUMMARIES:
        end = floor_to(moment, summary.period)
        with engine.connect() as connection:
            start = _first_to_recompute(connection, summary)
        if start is None or start >= end:
            continue
        low = start
        while low < end:
            high = min(low + DAY, end)
            with engine.begin() as connection:
                _recompute(connection, summary, low, high)
            low = high
        done[summary.name] = (start, end)
        log.info("usage summary %s: %s to %s recomputed", summary.name, start, end)
    return done


def _first_to_recompute(connection: Any, summary: Summary) -> datetime | None:
    """The start of the day before the summary's end (rows the proxy flushed late), or of the first minute
    row's day for a summary never made; None when there are no rows."""
    through = connection.scalar(select(summary_state.c.through).where(summary_state.c.summary == summary.name))
    if through is not None:
        return floor_to(through, DAY) - DAY
    first = connection.scalar(select(func.min(api_usage_rollups.c.minute)))
    return None if first is None else floor_to(first, DAY)


def _recompute(connection: Any, summary: Summary, start: datetime, end: datetime) -> None:
    """Replace the summary's rows of [start, end) with the minute rows grouped again; its end is ``end``."""
    raw = api_usage_rollups.c
    period = PeriodStart(raw.minute, summary.period)
    grouped = (
        select(
            period.label("minute"),
            *(raw[name] for name in summary.dimensions),
            *((func.max if name == "latency_max_ms" else func.sum)(raw[name]).label(name) for name in MEASURES),
        )
        .where(raw.minute >= start, raw.minute < end)
        .group_by(period, *(raw[name] for name in summary.dimensions))
    )
    table = summary.table
    connection.execute(delete(table).where(table.c.minute >= start, table.c.minute < end))
    connection.execute(insert(table).from_select([c.name for c in grouped.selected_columns], grouped))
    state = summary_state.c
    moved = connection.execute(summary_state.update().where(state.summary == summary.name).values(through=end))
    if moved.rowcount == 0:
        connection.execute(insert(summary_state).values(summary=summary.name, through=end))


Piece = tuple[Summary | None, datetime, datetime]  # None: the minute rows


def plan(
    start: datetime,
    end: datetime,
    through: Mapping[str, datetime],
    used: frozenset[str],
    finest: timedelta | None = None,
) -> list[Piece]:
    """Where each piece of [start, end) is read from: the coarsest usable summary for as much as it covers,
    the next ones for the rest at either side, the minute rows last. A summary is usable when it has every
    column in ``used``, has been refreshed, and its period is at most ``finest`` (a report's time grain:
    an hourly report cannot read days)."""
    usable = [
        s for s in SUMMARIES if used <= s.columns and s.name in through and (finest is None or s.period <= finest)
    ]
    return _pieces(start, end, through, usable)


def _pieces(start: datetime, end: datetime, through: Mapping[str, datetime], usable: Sequence[Summary]) -> list[Piece]:
    if start >= end:
        return []
    if not usable:
        return [(None, start, end)]
    summary, rest = usable[0], usable[1:]
    low = ceil_to(start, summary.period)
    high = min(floor_to(end, summary.period), through[summary.name])
    if low >= high:
        return _pieces(start, end, through, rest)
    return [*_pieces(start, low, through, rest), (summary, low, high), *_pieces(high, end, through, rest)]


def usage_from(pieces: Sequence[Piece], columns: Sequence[str] = COLUMNS) -> FromClause:
    """What an api_usage report reads for ``pieces`` (``plan``): only ``columns`` (what the report uses, so
    the minute rows' covering index can answer); the minute rows themselves when no summary is in it."""
    if all(summary is None for summary, _, _ in pieces):
        return api_usage_rollups
    parts = []
    for summary, low, high in pieces:
        table = api_usage_rollups if summary is None else summary.table
        parts.append(select(*(table.c[name] for name in columns)).where(table.c.minute >= low, table.c.minute < high))
    return union_all(*parts).subquery("usage")


def columns_of(*expressions: ColumnElement[Any]) -> list[str]:
    """The api_usage_rollups columns ``expressions`` read, in table order, with ``minute`` always."""
    names = {"minute"}
    for expression in expressions:
        for element in visitors.iterate(expression):
            if isinstance(element, Column) and element.table is api_usage_rollups:
                names.add(element.name)
    return [name for name in COLUMNS if name in names]
