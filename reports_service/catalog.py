"""The allow-list: what a report may be made of, as SQLAlchemy Core expressions over the platform tables.

A report names a source, and dimensions and measures of that source, by name; only the names below exist,
and each maps to an expression written here. So user input chooses among these expressions and supplies
bound values (filters, the time range, the limit), and never becomes SQL syntax. The request models
(``reports_service.schemas``) are generated from this table, so the OpenAPI document lists exactly these
names per source.

Time buckets and the week arithmetic of cohorts differ between SQLite and PostgreSQL; they are small
compiled constructs (``TimeBucket``, ``WholeWeeksBetween``) whose SQL text is fixed per dialect and whose
only variable parts are the column expressions. Every bucket is rendered as ISO text (``2026-11-30``,
``2026-11-30T14:00:00``), so both databases give the same values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Float, Integer, case, cast, func, null
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.sql.selectable import FromClause
from sqlalchemy.types import String

from exporters.business.schema import ai_requests, api_usage_rollups, sessions, subscriptions, users

Grain = Literal["hour", "day", "week", "month"]
GRAINS: tuple[str, ...] = ("hour", "day", "week", "month")
Unit = Literal["count", "usd", "ms", "ratio", "tokens"]

# SQLite's strftime formats and modifiers, PostgreSQL's date_trunc field and to_char format per grain.
# On SQLite, timestamps are SQLAlchemy's text 'YYYY-MM-DD HH:MM:SS.ffffff': cutting text is several times
# cheaper than strftime's parsing, which only the week's date arithmetic needs.
_SQLITE_BUCKET = {
    "hour": "(substr({col}, 1, 10) || 'T' || substr({col}, 12, 2) || ':00:00')",
    "day": "substr({col}, 1, 10)",
    "week": "strftime('%Y-%m-%d', {col}, 'weekday 0', '-6 days')",  # the Monday of the ISO week
    "month": "(substr({col}, 1, 7) || '-01')",
}
_POSTGRES_BUCKET = {
    "hour": "to_char(date_trunc('hour', {col}), 'YYYY-MM-DD\"T\"HH24:00:00')",
    "day": "to_char(date_trunc('day', {col}), 'YYYY-MM-DD')",
    "week": "to_char(date_trunc('week', {col}), 'YYYY-MM-DD')",
    "month": "to_char(date_trunc('month', {col}), 'YYYY-MM-DD')",
}


class TimeBucket(FunctionElement[str]):
    """The start of the ``grain`` period holding a timestamp, as ISO text; ``grain`` is one of GRAINS."""

    type = String()
    name = "time_bucket"
    inherit_cache = False  # the grain is part of the SQL text, not a bound value

    def __init__(self, column: ColumnElement[Any], grain: str) -> None:
        if grain not in GRAINS:
            raise ValueError(f"unknown grain {grain!r}")
        self.grain = grain
        super().__init__(column)


def _bucket(element: TimeBucket, compiler: Any, templates: Mapping[str, str], **kw: Any) -> str:
    (column,) = element.clauses
    # The template is a constant chosen by the validated grain; only the column is compiled into it.
    return templates[element.grain].replace("{col}", compiler.process(column, **kw))


@compiles(TimeBucket, "sqlite")
def _bucket_sqlite(element: TimeBucket, compiler: Any, **kw: Any) -> str:
    return _bucket(element, compiler, _SQLITE_BUCKET, **kw)


@compiles(TimeBucket, "postgresql")
def _bucket_postgresql(element: TimeBucket, compiler: Any, **kw: Any) -> str:
    return _bucket(element, compiler, _POSTGRES_BUCKET, **kw)


class WholeWeeksBetween(FunctionElement[int]):
    """Whole weeks from ``start`` to ``end`` (``end >= start``): 0 for the first 7 days after ``start``."""

    type = Integer()
    name = "whole_weeks_between"
    inherit_cache = True


@compiles(WholeWeeksBetween, "sqlite")
def _weeks_sqlite(element: WholeWeeksBetween, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    # CAST truncates toward zero, which is floor for the non-negative differences used here
    return f"CAST((julianday({end}) - julianday({start})) / 7 AS INTEGER)"


@compiles(WholeWeeksBetween, "postgresql")
def _weeks_postgresql(element: WholeWeeksBetween, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(floor(extract(epoch FROM ({end} - {start})) / 604800) AS INTEGER)"


@dataclass(frozen=True)
class Dimension:
    name: str
    description: str
    expression: ColumnElement[Any]


@dataclass(frozen=True)
class Measure:
    name: str
    description: str
    expression: ColumnElement[Any]
    unit: Unit = "count"


@dataclass(frozen=True)
class Source:
    """One thing to report on: a table (or join), its time column, and its dimensions and measures."""

    name: str
    description: str
    from_clause: FromClause
    time_column: ColumnElement[Any]
    dimensions: dict[str, Dimension] = field(default_factory=dict)
    measures: dict[str, Measure] = field(default_factory=dict)


def _ratio(numerator: ColumnElement[Any], denominator: ColumnElement[Any]) -> ColumnElement[Any]:
    """numerator / denominator as a float, NULL when the denominator is 0 (never a division error)."""
    return cast(numerator, Float) / func.nullif(cast(denominator, Float), 0.0)


def _source(
    name: str,
    description: str,
    from_clause: FromClause,
    time_column: ColumnElement[Any],
    dimensions: list[Dimension],
    measures: list[Measure],
) -> Source:
    return Source(
        name,
        description,
        from_clause,
        time_column,
        {d.name: d for d in dimensions},
        {m.name: m for m in measures},
    )


class _ColumnsOrNull:
    def __init__(self, table: FromClause) -> None:
        self.columns = table.c

    def __getattr__(self, name: str) -> Any:
        return self.columns[name] if name in self.columns else null()


def usage_source(table: FromClause) -> Source:
    """The api_usage source over ``table``: api_usage_rollups itself, or anything with its columns (the
    union of minute rows and the usage summaries, reports_service.summary), which may carry only the columns
    one report uses: the others stand as NULL in expressions that report never compiles."""
    r = _ColumnsOrNull(table)
    calls_5xx = func.sum(case((r.status_class == "5xx", r.calls), else_=0))
    calls_4xx = func.sum(case((r.status_class == "4xx", r.calls), else_=0))
    return _source(
        "api_usage",
        "The proxy's per-minute rollups of API calls (api_usage_rollups).",
        table,
        r.minute,
        [
            Dimension("owner", "The API key's owner (the customer).", r.owner),
            Dimension("key_id", "The proxy's key id (SHA-256 of the key).", r.key_id),
            Dimension("tier", "The key's tier at the time of the call.", r.tier),
            Dimension("route", "The route template called.", r.route),
            Dimension("status_class", "1xx … 5xx.", r.status_class),
        ],
        [
            Measure("calls", "API calls.", func.sum(r.calls)),
            Measure("refused", "Calls refused by a rate limit or quota (429).", func.sum(r.refused)),
            Measure("server_errors", "Calls answered with a 5xx.", calls_5xx),
            Measure("client_errors", "Calls answered with a 4xx.", calls_4xx),
            Measure(
                "error_ratio", "Share of calls answered with a 5xx.", _ratio(calls_5xx, func.sum(r.calls)), "ratio"
            ),
            Measure(
                "refused_ratio",
                "Share of calls refused by a limit.",
                _ratio(func.sum(r.refused), func.sum(r.calls)),
                "ratio",
            ),
            Measure("avg_latency_ms", "Mean latency.", _ratio(func.sum(r.latency_sum_ms), func.sum(r.calls)), "ms"),
            Measure("max_latency_ms", "Highest latency.", cast(func.max(r.latency_max_ms), Float), "ms"),
            Measure(
                "within_250ms_ratio",
                "Share of calls answered within 250 ms.",
                _ratio(func.sum(r.latency_le_250ms), func.sum(r.calls)),
                "ratio",
            ),
            Measure("keys", "Distinct API keys.", func.count(func.distinct(r.key_id))),
        ],
    )


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        usage_source(api_usage_rollups),
        _source(
            "signups",
            "Accounts by sign-up time (users).",
            users,
            users.c.signed_up_at,
            [Dimension("tier", "The account's current plan.", users.c.tier)],
            [Measure("users", "Accounts that signed up.", func.count(users.c.id))],
        ),
        _source(
            "subscriptions",
            "Paid periods of a plan by their start (subscriptions).",
            subscriptions,
            subscriptions.c.started_at,
            [
                Dimension("plan", "The subscription's plan.", subscriptions.c.plan),
                Dimension("status", "active, upgraded or churned.", subscriptions.c.status),
            ],
            [
                Measure("subscriptions", "Subscriptions started.", func.count(subscriptions.c.id)),
                Measure("customers", "Distinct paying accounts.", func.count(func.distinct(subscriptions.c.user_id))),
                Measure(
                    "monthly_amount_usd",
                    "Monthly amount of the subscriptions started.",
                    cast(func.sum(subscriptions.c.monthly_amount_usd), Float),
                    "usd",
                ),
            ],
        ),
        _source(
            "sessions",
            "Login sessions by their start, with the account's plan (sessions joined to users).",
            sessions.join(users, sessions.c.user_id == users.c.id),
            sessions.c.started_at,
            [Dimension("tier", "The account's current plan.", users.c.tier)],
            [
                Measure("sessions", "Sessions started.", func.count(sessions.c.id)),
                Measure(
                    "active_users", "Distinct accounts with a session.", func.count(func.distinct(sessions.c.user_id))
                ),
            ],
        ),
        _source(
            "ai_requests",
            "AI requests by time, model and plan (ai_requests joined to users).",
            ai_requests.join(users, ai_requests.c.user_id == users.c.id),
            ai_requests.c.created_at,
            [
                Dimension("model", "The AI model.", ai_requests.c.model),
                Dimension("tier", "The account's current plan.", users.c.tier),
            ],
            [
                Measure("requests", "AI requests.", func.count(ai_requests.c.id)),
                Measure("tokens", "Tokens used.", func.sum(ai_requests.c.tokens), "tokens"),
                Measure(
                    "active_users",
                    "Distinct accounts with an AI request.",
                    func.count(func.distinct(ai_requests.c.user_id)),
                ),
            ],
        ),
    )
}

COHORT_SOURCE = "retention_cohorts"
"""The cohort report: accounts by sign-up week (users) and the share with a session in each later week."""
COHORT_DIMENSIONS = {"tier": users.c.tier}  # what a cohort report may be filtered by

TIME_DIMENSION = "time"  # the bucketed time column, when a report has a ``time_grain``
