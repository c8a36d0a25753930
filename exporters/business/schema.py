"""The reference schema the default business queries are written for (SQLAlchemy Core, SQLite or PostgreSQL).

A platform whose tables differ keeps the exporter and writes its own queries in the YAML; this schema is
what the shipped queries and the demo database (`python -m demo.business_db`) agree on.

- users: one row per account; `tier` is the current plan, one of the platform's tiers (service_kit/tiers.py)
  (during a trial, the plan on trial: the user gets its features and limits).
- subscriptions: one row per period of a plan. A plan change ends the old row (status "upgraded" or
  "downgraded") and starts a new one; a cancellation ends it with status "churned"; a running paid row is
  "active". MRR at time t is the sum of `monthly_amount_usd` over rows with started_at <= t <
  coalesce(ended_at, infinity).
  A free trial of a plan is a row of that plan at amount 0 (so it is never revenue): status "trialing"
  while it runs (ended_at NULL), then "converted" when it ended with the user paying for a plan (the paid
  row starts when the trial ends) or "expired" when it ended without. Trial-to-paid conversion is read
  from those two statuses.
- sessions: one row per login session, with its last activity (active users, active sessions).
- ai_requests: one row per AI request (AI usage per day).
- api_usage_rollups: the proxy's per-minute rollups of API calls (issue 15), one row per API key, minute,
  route template and status class; the proxy adds to a row (an upsert) for each batch it flushes, so
  several proxy replicas can write the same minute. Latency is bucketed (cumulative, like a Prometheus
  histogram) so percentiles can be estimated from sums of rows.

Timestamps are naive UTC.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
)

PAID_STATUSES = ("active", "upgraded", "downgraded", "churned")  # running, or how the period ended
TRIAL_STATUSES = ("trialing", "converted", "expired")  # running, or how the trial ended
SUBSCRIPTION_STATUSES = (*PAID_STATUSES, *TRIAL_STATUSES)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("signed_up_at", DateTime, nullable=False, index=True),
    Column("tier", String(16), nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id"), nullable=False),
    Column("plan", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("monthly_amount_usd", Numeric(10, 2), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("ended_at", DateTime, nullable=True),
    Index("ix_subscriptions_period", "started_at", "ended_at"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id"), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("last_activity_at", DateTime, nullable=False),
    Index("ix_sessions_activity", "last_activity_at", "user_id"),
)

ai_requests = Table(
    "ai_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id"), nullable=False),
    Column("created_at", DateTime, nullable=False, index=True),
    Column("model", String(32), nullable=False),
    Column("tokens", Integer, nullable=False),
)

LATENCY_BUCKETS_MS = (25, 100, 250, 1000)  # api_usage_rollups.latency_le_<n>ms: calls at or under n ms
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

api_usage_rollups = Table(
    "api_usage_rollups",
    metadata,
    Column("minute", DateTime, primary_key=True),  # naive UTC, truncated to the minute
    Column("key_id", String(64), primary_key=True),  # the proxy's key id (SHA-256 of the key); "anonymous"
    Column("route", String(120), primary_key=True),  # the route template (never a raw path), or "other"
    Column("status_class", String(3), primary_key=True),  # one of STATUS_CLASSES
    Column("tier", String(16), nullable=False),  # the key's tier at the time (service_kit/tiers.py)
    Column("owner", String(120), nullable=False),  # the key's owner as the proxy knows it
    Column("calls", Integer, nullable=False),
    Column("refused", Integer, nullable=False),  # calls refused by a rate limit or quota (429)
    Column("latency_sum_ms", Numeric(14, 3), nullable=False),
    Column("latency_max_ms", Numeric(10, 3), nullable=False),
    *(Column(f"latency_le_{bucket}ms", Integer, nullable=False) for bucket in LATENCY_BUCKETS_MS),
    Index("ix_api_usage_rollups_key_minute", "key_id", "minute"),
    # The reports service's queries (reports_service/catalog.py): a time range grouped by customer. Covering
    # the measures they sum, so SQLite answers from the index alone (bench/reports_query.py).
    Index(
        "ix_api_usage_rollups_minute_owner",
        "minute",
        "owner",
        "tier",
        "status_class",
        "calls",
        "refused",
        "latency_sum_ms",
    ),
)
