"""A brute-force reference for the computed business metrics, written from the definitions row by row.

It reads whole tables (not the exporter's input selects, so it also checks their windows), finds periods
with its own calendar arithmetic (ISO weekdays, month stepping) and answers each figure by scanning every
row again: slow, and obviously right. Keys are (metric, sorted labels); absent figures are absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

from service_kit.tiers import PAID_TIERS

Key = tuple[str, tuple[tuple[str, str], ...]]
Row = Mapping[str, Any]


def key(metric: str, **labels: str) -> Key:
    return metric, tuple(sorted(labels.items()))


def monday(t: datetime) -> datetime:
    return datetime.combine(t.date() - timedelta(days=t.isoweekday() - 1), time())


def first_of_month(t: datetime, back: int) -> datetime:
    day = date(t.year, t.month, 1)
    for _ in range(back):
        day = (day - timedelta(days=1)).replace(day=1)
    return datetime.combine(day, time())


def epoch(t: datetime) -> float:
    return (t - datetime(1970, 1, 1)).total_seconds()


def flag(value: bool) -> str:
    return "true" if value else "false"


def cents(row: Row) -> int:
    return round(float(row["monthly_amount_usd"]) * 100)


def seen(first_signup: datetime | None, end: datetime | None, now: datetime) -> bool:
    """The period [.., end) saw some history (end None: the current period, up to now)."""
    return first_signup is not None and first_signup <= now and (end is None or first_signup < end)


def reference(
    users: Sequence[Row], sessions: Sequence[Row], subscriptions: Sequence[Row], now: datetime
) -> dict[Key, float]:
    expected: dict[Key, float] = {}
    first_signup = min((u["signed_up_at"] for u in users), default=None)

    # retention
    weeks = [monday(now) - timedelta(days=7 * c) for c in range(12)]
    for c, start in enumerate(weeks):
        expected[key("business_cohort_start_timestamp_seconds", cohort=str(c), in_progress=flag(c == 0))] = epoch(start)
        if not seen(first_signup, start + timedelta(days=7), now):
            continue
        cohort = [
            u for u in users if start <= u["signed_up_at"] < start + timedelta(days=7) and u["signed_up_at"] <= now
        ]
        expected[key("business_cohort_users", cohort=str(c), in_progress=flag(c == 0))] = len(cohort)
        for n in range(c + 1):
            window = weeks[c - n]
            kept = 0
            for user in cohort:
                if n == 0:
                    kept += 1
                    continue
                for s in sessions:
                    if s["user_id"] != user["id"]:
                        continue
                    low = min(s["started_at"], s["last_activity_at"])
                    high = min(s["last_activity_at"], now)
                    if low <= high and low < window + timedelta(days=7) and high >= window:
                        kept += 1
                        break
            labels = {"cohort": str(c), "week": str(n), "in_progress": flag(n == c)}
            expected[key("business_retained_users", **labels)] = kept
            if cohort:
                expected[key("business_retention_ratio", **labels)] = kept / len(cohort)

    # revenue
    paid = [row for row in subscriptions if cents(row) > 0]

    def mrr(user: Any, t: datetime) -> int:
        return sum(
            cents(row)
            for row in paid
            if row["user_id"] == user and row["started_at"] <= t and (row["ended_at"] is None or t < row["ended_at"])
        )

    def paid_before(user: Any, t: datetime) -> bool:
        return any(
            row["user_id"] == user
            and row["started_at"] < t
            and (row["ended_at"] is None or row["ended_at"] > row["started_at"])
            for row in paid
        )

    customers = sorted({row["user_id"] for row in paid})
    months = [first_of_month(now, m) for m in range(13)]
    for m in range(12):
        labels = {"month": str(m), "in_progress": flag(m == 0)}
        expected[key("business_month_start_timestamp_seconds", **labels)] = epoch(months[m])
        end = None if m == 0 else months[m - 1]
        if not seen(first_signup, end, now):
            continue
        moved = dict.fromkeys(("new", "expansion", "contraction", "churn", "reactivation"), 0)
        opening = closing = start_paying = end_from_paying = kept = 0
        for user in customers:
            a, b = mrr(user, months[m]), mrr(user, now if end is None else end)
            opening += a
            closing += b
            if a > 0:
                start_paying += a
                end_from_paying += b
                kept += min(a, b)
            if a == 0 and b > 0:
                moved["reactivation" if paid_before(user, months[m]) else "new"] += b
            elif a > 0 and b > a:
                moved["expansion"] += b - a
            elif a > b > 0:
                moved["contraction"] += a - b
            elif a > 0 and b == 0:
                moved["churn"] += a
        expected[key("business_mrr_opening_usd", **labels)] = opening / 100
        expected[key("business_mrr_closing_usd", **labels)] = closing / 100
        for movement, amount in moved.items():
            expected[key("business_mrr_movement_usd", movement=movement, **labels)] = amount / 100
        if start_paying:
            expected[key("business_net_revenue_retention_ratio", **labels)] = end_from_paying / start_paying
            expected[key("business_gross_revenue_retention_ratio", **labels)] = kept / start_paying
    year_start = sum(mrr(u, months[12]) for u in customers)
    if year_start:
        payers = [u for u in customers if mrr(u, months[12]) > 0]
        expected[key("business_net_revenue_retention_12m_ratio")] = sum(mrr(u, months[0]) for u in payers) / year_start
        expected[key("business_gross_revenue_retention_12m_ratio")] = (
            sum(min(mrr(u, months[12]), mrr(u, months[0])) for u in payers) / year_start
        )
    for tier in [*PAID_TIERS, "other"]:
        rows = [
            row
            for row in paid
            if (row["plan"] if row["plan"] in PAID_TIERS else "other") == tier
            and row["started_at"] <= now
            and (row["ended_at"] is None or now < row["ended_at"])
        ]
        if tier == "other" and not rows:
            continue
        paying = len({row["user_id"] for row in rows})
        expected[key("business_paying_customers", tier=tier)] = paying
        if paying:
            expected[key("business_arpu_usd", tier=tier)] = sum(cents(row) for row in rows) / 100 / paying

    # trials
    expected[key("business_trials_running")] = sum(
        1
        for row in subscriptions
        if row["status"] == "trialing"
        and row["started_at"] <= now
        and (row["ended_at"] is None or now < row["ended_at"])
    )
    for m in range(12):
        end = None if m == 0 else months[m - 1]
        if not seen(first_signup, end, now):
            continue
        labels = {"month": str(m), "in_progress": flag(m == 0)}
        counts = {
            outcome: sum(
                1
                for row in subscriptions
                if row["status"] == outcome
                and row["ended_at"] is not None
                and months[m] <= row["ended_at"] <= now
                and (end is None or row["ended_at"] < end)
            )
            for outcome in ("converted", "expired")
        }
        for outcome, count in counts.items():
            expected[key("business_trials_ended", outcome=outcome, **labels)] = count
        if sum(counts.values()):
            expected[key("business_trial_conversion_ratio", **labels)] = counts["converted"] / sum(counts.values())
    return expected
