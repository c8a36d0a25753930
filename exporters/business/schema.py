"""The reference schema the default business queries are written for (SQLAlchemy Core, SQLite or PostgreSQL).

A platform whose tables differ keeps the exporter and writes its own queries in the YAML; this schema is
what the shipped queries and the demo database (`python -m demo.business_db`) agree on.

- users: one row per account; `tier` is the current plan, one of the platform's tiers (service_kit/tiers.py).
- subscriptions: one row per paid period of a plan. An upgrade ends the old row (status "upgraded") and
  starts a new one; a cancellation ends it with status "churned". MRR at time t is the sum of
  `monthly_amount_usd` over rows with started_at <= t < coalesce(ended_at, infinity).
- sessions: one row per login session, with its last activity (active users, active sessions).
- ai_requests: one row per AI request (AI usage per day).

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

SUBSCRIPTION_STATUSES = ("active", "upgraded", "churned")

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
