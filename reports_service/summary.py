"""A daily summary of the usage rollups, so a report over weeks of API usage reads thousands of rows, not
a million: ``reports_usage_daily``, kept by the reports service in the platform database.

Why: a saved report such as "top customers by calls, last 7 days" over 1M minute rows made SQLite walk a
quarter of them through a GROUP BY (about 1.2 s on the loaded bench machine, bench/RESULTS.md), and the
index alone cannot make a GROUP BY cheaper. The summary has the rollups' columns, one row per day, key,
route and status class (``minute`` holds the day's start), so every api_usage dimension and measure reads
it unchanged (``catalog.usage_source``); distinct keys stay exact because ``key_id`` is kept.

How a report uses it (``usage_from``): the whole days of its range that the summary covers come from the
summary, the rest (the partial days at both ends, and today) from the minute rows, in one UNION ALL that
the report's SQL then groups like the table itself. Hourly reports read the minute rows only.

How it is kept (``refresh``, the kit's job ``usage_summary``): each pass recomputes, with one
INSERT … SELECT, the days from the day before the summary's end up to yesterday, and moves the end
(``reports_usage_daily_state.through``) to today's start. The day before is recomputed so rows the proxy
flushed late (after midnight) are counted. Days before ``through`` are final; today is never summarised.
Like a BI tool's persisted models, this writes a table of its own in the database it reads; with
``platform.daily_summary: false`` the service only reads, from the minute rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
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
_KEY = ("minute", "key_id", "route", "status_class")
_SUMMED = [c for c in COLUMNS if c not in (*_KEY, "tier", "owner", "latency_max_ms")]

usage_daily = Table(
    "reports_usage_daily",
    summary_metadata,
    *(
        Column(column.name, column.type, primary_key=column.name in _KEY, nullable=column.nullable)
        for column in api_usage_rollups.columns
    ),
    Index("ix_reports_usage_daily_minute_owner", "minute", "owner", "tier", "status_class", "calls"),
)
summary_state = Table(
    "reports_usage_daily_state",
    summary_metadata,
    Column("id", Integer, primary_key=True),
    Column("through", DateTime, nullable=False),  # naive UTC; days before it are summarised and final
)


class DayStart(FunctionElement[datetime]):
    """The start of a timestamp's UTC day, stored as the rollups store timestamps."""

    type = DateTime()
    name = "day_start"
    inherit_cache = True


@compiles(DayStart, "sqlite")
def _day_sqlite(element: DayStart, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    # SQLAlchemy's SQLite DateTime text, so the summary's days compare with bound datetimes as text
    return f"strftime('%Y-%m-%d 00:00:00.000000', {compiler.process(column, **kw)})"


@compiles(DayStart, "postgresql")
def _day_postgresql(element: DayStart, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    return f"date_trunc('day', {compiler.process(column, **kw)})"


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def covered_through(engine: Engine) -> datetime | None:
    """The summary's end (naive UTC), or None when there is no summary (yet)."""
    try:
        with engine.connect() as connection:
            value = connection.scalar(select(summary_state.c.through).where(summary_state.c.id == 1))
    except Exception:  # no table yet, or the database is away: the minute rows answer
        return None
    return value


def refresh(engine: Engine, now: datetime) -> tuple[datetime, datetime] | None:
    """Summarise the days up to yesterday that are not final yet; returns the days recomputed, if any."""
    today = _midnight(now.astimezone(UTC).replace(tzinfo=None))
    summary_metadata.create_all(engine, checkfirst=True)
    with engine.begin() as connection:
        through = connection.scalar(select(summary_state.c.through).where(summary_state.c.id == 1))
        if through is None:
            first = connection.scalar(select(func.min(api_usage_rollups.c.minute)))
            if first is None:
                return None
            start = _midnight(first)
        else:
            start = through - timedelta(days=1)  # the last final day again: late flushes after midnight
        if start >= today:
            return None
        day = DayStart(api_usage_rollups.c.minute)
        source = api_usage_rollups.c
        grouped = (
            select(
                day.label("minute"),
                source.key_id,
                source.route,
                source.status_class,
                func.max(source.tier).label("tier"),
                func.max(source.owner).label("owner"),
                *(func.sum(source[name]).label(name) for name in _SUMMED),
                func.max(source.latency_max_ms).label("latency_max_ms"),
            )
            .where(source.minute >= start, source.minute < today)
            .group_by(day, source.key_id, source.route, source.status_class)
        )
        names = [column.name for column in grouped.selected_columns]
        connection.execute(delete(usage_daily).where(usage_daily.c.minute >= start, usage_daily.c.minute < today))
        connection.execute(insert(usage_daily).from_select(names, grouped))
        if through is None:
            connection.execute(insert(summary_state).values(id=1, through=today))
        else:
            connection.execute(summary_state.update().where(summary_state.c.id == 1).values(through=today))
    log.info("usage summary: days %s to %s recomputed", start.date(), (today - timedelta(days=1)).date())
    return start, today


def usage_from(
    start: datetime, end: datetime, through: datetime | None, columns: Sequence[str] = COLUMNS
) -> FromClause:
    """What an api_usage report over [start, end) (naive UTC) reads: the summary's whole days inside the
    range, the minute rows before and after them; only ``columns`` (what the report uses, so the minute
    rows' covering index can answer). Without a summary covering a whole day: the minute rows alone."""
    first_day = _midnight(start) if start == _midnight(start) else _midnight(start) + timedelta(days=1)
    last_day = min(_midnight(end), through) if through is not None else first_day
    if through is None or first_day >= last_day:
        return api_usage_rollups
    raw = api_usage_rollups.c
    parts = [
        select(*(raw[name] for name in columns)).where(raw.minute >= low, raw.minute < high)
        for low, high in ((start, first_day), (last_day, end))
        if low < high
    ]
    daily = usage_daily.c
    parts.append(select(*(daily[name] for name in columns)).where(daily.minute >= first_day, daily.minute < last_day))
    return union_all(*parts).subquery("usage")


def columns_of(*expressions: ColumnElement[Any]) -> list[str]:
    """The api_usage_rollups columns ``expressions`` read, in table order, with ``minute`` always."""
    names = {"minute"}
    for expression in expressions:
        for element in visitors.iterate(expression):
            if isinstance(element, Column) and element.table is api_usage_rollups:
                names.add(element.name)
    return [name for name in COLUMNS if name in names]
