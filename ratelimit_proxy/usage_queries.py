"""What the usage rollups (``api_usage_rollups``, written by ratelimit_proxy/usage.py) answer: the top
customers by calls or errors, the upgrade candidates, and usage against quota per tier.

SQLAlchemy Core, one statement per question, the same on SQLite and PostgreSQL (the one difference, clock
hours and days of a timestamp, is ``_truncate``). The caller gives the connection, the period and the tier
limits: no wall clock, no settings read here, so the functions are tested against a brute-force reference
on both databases (tests/ratelimit_proxy/test_usage_queries.py).

What the figures mean:
- A customer is an API key. Calls without one (key id "anonymous", limited per client IP) are nobody's and
  left out of every answer here; the table keeps them.
- Errors are calls answered 4xx or 5xx, the proxy's own refusals (429) included; ``refused`` counts those.
- Peaks are counted in clock windows (12:03:00 to 12:03:59; clock hours; UTC days for the AI quota) while
  the limiter's windows slide, so a peak is a lower bound of what the limiter saw. Refusals are exact.
  Calls count one each: route costs (``limits.routes[].cost``) are not applied. The burst limit (per
  second) cannot be judged from minute rollups and is not.
- A key whose tier changed within the period is one entry per tier, each compared with its own limits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Float, and_, case, cast, func, literal_column, or_, select, type_coerce
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Subquery

from exporters.business.schema import LATENCY_BUCKETS_MS, api_usage_rollups
from ratelimit_proxy.settings import TierSettings
from ratelimit_proxy.usage import ANONYMOUS, BUCKET_COLUMNS
from service_kit.tiers import TIERS

ROLLUPS = api_usage_rollups.c
ERROR_CLASSES = ("4xx", "5xx")
# The windows judged, as the policy names them, with the tier setting each is compared with.
WINDOWS = (("minute", "per_minute"), ("hour", "per_hour"), ("ai-day", "ai_per_day"))
PEAK_COLUMNS = {"minute": "peak_minute", "hour": "peak_hour", "ai-day": "peak_ai_day"}
# Formats of a clock hour and a UTC day: constants, never input.
_SQLITE_FORMATS = {"hour": "'%Y-%m-%d %H'", "day": "'%Y-%m-%d'"}
_POSTGRES_UNITS = {"hour": "'hour'", "day": "'day'"}
By = Literal["calls", "errors"]


@dataclass(frozen=True)
class Period:
    """Minutes from ``since`` (included) to ``until`` (excluded), naive UTC as the table stores them."""

    since: datetime
    until: datetime

    def holds(self, minute: ColumnElement[Any]) -> ColumnElement[bool]:
        return and_(minute >= self.since, minute < self.until)


def _customers(period: Period) -> ColumnElement[bool]:
    return and_(period.holds(ROLLUPS.minute), ROLLUPS.key_id != ANONYMOUS)


def _truncate(dialect: str, unit: Literal["hour", "day"], column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The clock hour or UTC day of a timestamp. Literal text, not bound parameters: PostgreSQL must see
    the same expression in SELECT and GROUP BY, and two parameters are two expressions to it."""
    if dialect == "postgresql":
        return func.date_trunc(literal_column(_POSTGRES_UNITS[unit]), column)
    return func.strftime(literal_column(_SQLITE_FORMATS[unit]), column)


def _float(expression: ColumnElement[Any]) -> ColumnElement[float]:
    """NUMERIC sums as floats: SQLite has no decimals, and SQLAlchemy warns when it converts to them."""
    return type_coerce(expression, Float)


def p95_bound_ms(calls: int, cumulative: Sequence[int]) -> int | None:
    """The smallest latency bucket (ms) holding 95% of ``calls``; None when that is above the largest."""
    for bound, count in zip(LATENCY_BUCKETS_MS, cumulative, strict=True):
        if count * 100 >= calls * 95:
            return bound
    return None


def _latest_identity(connection: Connection, period: Period, key_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """(tier, owner) of each key on its latest row in the period."""
    if not key_ids:
        return {}
    order = (ROLLUPS.minute.desc(), ROLLUPS.route, ROLLUPS.status_class)
    ranked = (
        select(
            ROLLUPS.key_id,
            ROLLUPS.tier,
            ROLLUPS.owner,
            func.row_number().over(partition_by=ROLLUPS.key_id, order_by=order).label("n"),
        )
        .where(period.holds(ROLLUPS.minute), ROLLUPS.key_id.in_(key_ids))
        .subquery()
    )
    rows = connection.execute(select(ranked.c.key_id, ranked.c.tier, ranked.c.owner).where(ranked.c.n == 1))
    return {key_id: (tier, owner) for key_id, tier, owner in rows}


def top_customers(connection: Connection, period: Period, by: By, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` keys with the most calls, or the most errors (keys with none left out); ties by key."""
    errors = func.sum(case((ROLLUPS.status_class.in_(ERROR_CLASSES), ROLLUPS.calls), else_=0))
    calls = func.sum(ROLLUPS.calls)
    statement = (
        select(
            ROLLUPS.key_id,
            calls.label("calls"),
            errors.label("errors"),
            func.sum(case((ROLLUPS.status_class == "4xx", ROLLUPS.calls), else_=0)).label("client_errors"),
            func.sum(case((ROLLUPS.status_class == "5xx", ROLLUPS.calls), else_=0)).label("server_errors"),
            func.sum(ROLLUPS.refused).label("refused"),
            _float(func.sum(ROLLUPS.latency_sum_ms)).label("latency_sum_ms"),
            _float(func.max(ROLLUPS.latency_max_ms)).label("latency_max_ms"),
            *(func.sum(ROLLUPS[column]).label(column) for column in BUCKET_COLUMNS),
        )
        .where(_customers(period))
        .group_by(ROLLUPS.key_id)
    )
    if by == "errors":
        statement = statement.having(errors > 0)
    ranking = errors if by == "errors" else calls
    rows = connection.execute(statement.order_by(ranking.desc(), ROLLUPS.key_id).limit(limit)).mappings().all()
    identities = _latest_identity(connection, period, [row["key_id"] for row in rows])
    answer = []
    for row in rows:
        tier, owner = identities[row["key_id"]]
        calls_made = int(row["calls"])
        answer.append(
            {
                "key_id": row["key_id"],
                "owner": owner,
                "tier": tier,
                "calls": calls_made,
                "errors": int(row["errors"]),
                "client_errors": int(row["client_errors"]),
                "server_errors": int(row["server_errors"]),
                "refused": int(row["refused"]),
                "latency_mean_ms": round(row["latency_sum_ms"] / calls_made, 3) if calls_made else None,
                "latency_max_ms": round(row["latency_max_ms"], 3),
                "latency_p95_le_ms": p95_bound_ms(calls_made, [int(row[c]) for c in BUCKET_COLUMNS]),
            }
        )
    return answer


def key_peaks(dialect: str, period: Period, ai_routes: Sequence[str]) -> Subquery:
    """Per key and tier: calls, refused, and the busiest clock minute, clock hour and UTC day of AI calls
    (calls to ``ai_routes``, the route templates under ``limits.ai_paths``)."""
    customers = _customers(period)
    per_minute = (
        select(
            ROLLUPS.key_id,
            ROLLUPS.tier,
            func.sum(ROLLUPS.calls).label("calls"),
            func.sum(ROLLUPS.refused).label("refused"),
        )
        .where(customers)
        .group_by(ROLLUPS.key_id, ROLLUPS.tier, ROLLUPS.minute)
        .subquery()
    )
    minutes = (
        select(
            per_minute.c.key_id,
            per_minute.c.tier,
            func.sum(per_minute.c.calls).label("calls"),
            func.sum(per_minute.c.refused).label("refused"),
            func.max(per_minute.c.calls).label("peak_minute"),
        )
        .group_by(per_minute.c.key_id, per_minute.c.tier)
        .subquery()
    )

    def peak(unit: Literal["hour", "day"], name: str, *only: ColumnElement[bool]) -> Subquery:
        clock = _truncate(dialect, unit, ROLLUPS.minute)
        sums = (
            select(ROLLUPS.key_id, ROLLUPS.tier, func.sum(ROLLUPS.calls).label("calls"))
            .where(customers, *only)
            .group_by(ROLLUPS.key_id, ROLLUPS.tier, clock)
            .subquery()
        )
        return (
            select(sums.c.key_id, sums.c.tier, func.max(sums.c.calls).label(name))
            .group_by(sums.c.key_id, sums.c.tier)
            .subquery()
        )

    hours = peak("hour", "peak_hour")
    ai_days = peak("day", "peak_ai_day", ROLLUPS.route.in_(list(ai_routes)))

    def same(other: Subquery) -> ColumnElement[bool]:
        return and_(other.c.key_id == minutes.c.key_id, other.c.tier == minutes.c.tier)

    return (
        select(
            minutes.c.key_id,
            minutes.c.tier,
            minutes.c.calls,
            minutes.c.refused,
            minutes.c.peak_minute,
            hours.c.peak_hour,
            func.coalesce(ai_days.c.peak_ai_day, 0).label("peak_ai_day"),
        )
        .select_from(minutes.join(hours, same(hours)).outerjoin(ai_days, same(ai_days)))
        .subquery()
    )


def _quota(tiers: Mapping[str, TierSettings], setting: str, tier: ColumnElement[str]) -> ColumnElement[int]:
    """The tier's quota of one setting, as a CASE over the tier column (the limits are bound parameters)."""
    return case({name: getattr(limits, setting) for name, limits in tiers.items()}, value=tier, else_=None)


def _near(peak: ColumnElement[int], quota: ColumnElement[int], near_percent: int) -> ColumnElement[bool]:
    """At ``near_percent`` of the quota or above, in integers (0.8 * 5 is not 4 in floating point)."""
    return peak * 100 >= quota * near_percent


def _ratio(peak: ColumnElement[int], quota: ColumnElement[int]) -> ColumnElement[Any]:
    return cast(peak, Float) / quota


def _greatest(*values: ColumnElement[Any]) -> ColumnElement[Any]:
    """GREATEST (PostgreSQL) is MAX (SQLite) with several arguments: the same as one CASE on both."""
    first, *rest = values
    if not rest:
        return first
    other = _greatest(*rest)
    return case((first >= other, first), else_=other)


def next_tier(tier: str) -> str | None:
    index = TIERS.index(tier) if tier in TIERS else -1
    return TIERS[index + 1] if 0 <= index < len(TIERS) - 1 else None


def upgrade_candidates(
    connection: Connection,
    period: Period,
    tiers: Mapping[str, TierSettings],
    ai_routes: Sequence[str],
    near_percent: int,
    limit: int,
) -> list[dict[str, Any]]:
    """Keys whose peak reached ``near_percent`` of a limit of their tier, or that a limit refused; the
    closest to (or furthest over) a limit first."""
    peaks = key_peaks(connection.dialect.name, period, ai_routes)
    quotas = {window: _quota(tiers, setting, peaks.c.tier) for window, setting in WINDOWS}
    peak_of = {window: peaks.c[column] for window, column in PEAK_COLUMNS.items()}
    ratio = _greatest(*(_ratio(peak_of[window], quotas[window]) for window, _ in WINDOWS)).label("peak_ratio")
    near = or_(peaks.c.refused > 0, *(_near(peak_of[w], quotas[w], near_percent) for w, _ in WINDOWS))
    statement = (
        select(peaks, ratio)
        .where(near, peaks.c.tier.in_(list(tiers)))
        .order_by(ratio.desc(), peaks.c.refused.desc(), peaks.c.key_id, peaks.c.tier)
        .limit(limit)
    )
    rows = connection.execute(statement).mappings().all()
    owners = _latest_identity(connection, period, sorted({row["key_id"] for row in rows}))
    answer = []
    for row in rows:
        limits = tiers[row["tier"]]
        windows = []
        for window, setting in WINDOWS:
            quota, used = getattr(limits, setting), int(row[PEAK_COLUMNS[window]])
            windows.append({"window": window, "quota": quota, "peak": used, "ratio": round(used / quota, 4)})
        answer.append(
            {
                "key_id": row["key_id"],
                "owner": owners[row["key_id"]][1],
                "tier": row["tier"],
                "next_tier": next_tier(row["tier"]),
                "calls": int(row["calls"]),
                "refused": int(row["refused"]),
                "peak_ratio": round(float(row["peak_ratio"]), 4),
                "windows": windows,
            }
        )
    return answer


def tier_usage(
    connection: Connection,
    period: Period,
    tiers: Mapping[str, TierSettings],
    ai_routes: Sequence[str],
    near_percent: int,
) -> list[dict[str, Any]]:
    """Per tier (every tier of ``tiers``, in the platform's order): active keys, calls, refusals, and per
    window the quota, the highest peak of any key, the mean of the keys' peaks as a share of the quota, and
    how many keys came to ``near_percent`` of it."""
    peaks = key_peaks(connection.dialect.name, period, ai_routes)
    columns: list[ColumnElement[Any]] = [
        peaks.c.tier,
        func.count().label("keys"),
        func.sum(peaks.c.calls).label("calls"),
        func.sum(peaks.c.refused).label("refused"),
        func.sum(case((peaks.c.refused > 0, 1), else_=0)).label("keys_refused"),
    ]
    for window, setting in WINDOWS:
        peak, quota = peaks.c[PEAK_COLUMNS[window]], _quota(tiers, setting, peaks.c.tier)
        columns += [
            func.max(peak).label(f"{window}_peak"),
            func.avg(_ratio(peak, quota)).label(f"{window}_mean_ratio"),
            func.sum(case((_near(peak, quota, near_percent), 1), else_=0)).label(f"{window}_near"),
        ]
    statement = select(*columns).where(peaks.c.tier.in_(list(tiers))).group_by(peaks.c.tier)
    return tier_answer(tiers, {row["tier"]: dict(row) for row in connection.execute(statement).mappings()})


def tier_answer(tiers: Mapping[str, TierSettings], found: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``tier_usage``'s answer from its rows by tier; ``found`` empty: every tier unused."""
    answer = []
    for tier in sorted(tiers, key=lambda name: TIERS.index(name) if name in TIERS else len(TIERS)):
        row = found.get(tier)
        windows = []
        for window, setting in WINDOWS:
            mean = row[f"{window}_mean_ratio"] if row else None
            windows.append(
                {
                    "window": window,
                    "quota": getattr(tiers[tier], setting),
                    "peak": int(row[f"{window}_peak"]) if row else 0,
                    "mean_peak_ratio": round(float(mean), 4) if mean is not None else None,
                    "keys_near_limit": int(row[f"{window}_near"]) if row else 0,
                }
            )
        answer.append(
            {
                "tier": tier,
                "keys": int(row["keys"]) if row else 0,
                "calls": int(row["calls"]) if row else 0,
                "refused": int(row["refused"]) if row else 0,
                "keys_refused": int(row["keys_refused"]) if row else 0,
                "windows": windows,
            }
        )
    return answer
