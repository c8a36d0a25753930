"""The flag service's tables (migrations/versions create them) and the clock every store stamps rows with."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table

metadata = MetaData()

environments_table = Table(
    "flags_environments",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=True),  # the last bump; null: none since flags_0002
)
flags_table = Table(
    "flags_flags",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("document", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
flag_versions_table = Table(
    "flags_flag_versions",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("action", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("document", JSON, nullable=True),  # null: the flag was deleted at this version
    Column("created_at", DateTime(timezone=True), nullable=False),
)
segments_table = Table(
    "flags_segments",
    metadata,
    Column("environment", String(64), primary_key=True),
    Column("key", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("document", JSON, nullable=False),
)
sdk_keys_table = Table(
    "flags_sdk_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("environment", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)
evaluation_stats_table = Table(
    "flags_evaluation_stats",
    metadata,
    Column("environment", String(64), primary_key=True),
    Column("flag_key", String(100), primary_key=True),
    Column("evaluations", Integer, nullable=False),
    Column("last_evaluated_at", DateTime(timezone=True), nullable=False),
)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands timestamps back naive; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
