"""Database tables of the support desk (SQLAlchemy 2; SQLite by default, PostgreSQL-ready types)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the backend keeps (SQLite drops the zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


ticket_tags = Table(
    "ticket_tags",
    Base.metadata,
    Column("ticket_id", ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(64), primary_key=True),
    Index("ix_ticket_tags_tag", "tag"),
)


class Category(Base):
    __tablename__ = "categories"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)


class Ticket(Base):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="open")
    priority: Mapped[str] = mapped_column(String(10), default="medium")
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"))
    customer_id: Mapped[str] = mapped_column(String(120))
    customer_name: Mapped[str] = mapped_column(String(200), default="")
    customer_email: Mapped[str] = mapped_column(String(254), default="")
    customer_tier: Mapped[str | None] = mapped_column(String(20))  # service_kit.tiers.DESK_TIERS, or none
    assignee_id: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    follow_up_of_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    alert_group_key: Mapped[str | None] = mapped_column(String(500), unique=True)
    # SLA: the policy that applied and the deadlines it gave, recomputed on every change.
    sla_policy: Mapped[str | None] = mapped_column(String(80))
    first_response_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_response_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolution_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sla_breached: Mapped[bool] = mapped_column(Boolean, default=False)
    # The earliest of the three deadlines (past ones included), so queues sort by it and views count by it.
    sla_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The earliest stored deadline still in the future at the last recompute: when the sweeper must look.
    sla_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # Wall-clock durations kept when they happen, so scrape-time histograms are one GROUP BY.
    first_response_seconds: Mapped[float | None] = mapped_column()
    resolution_seconds: Mapped[float | None] = mapped_column()

    category: Mapped[Category | None] = relationship()
    messages: Mapped[list[Message]] = relationship(
        back_populates="ticket", order_by="Message.id", foreign_keys="Message.ticket_id"
    )

    __table_args__ = (
        Index("ix_tickets_status_priority", "status", "priority"),
        Index("ix_tickets_customer", "customer_id", "id"),
        Index("ix_tickets_created", "created_at", "id"),
        Index("ix_tickets_updated", "updated_at", "id"),
        Index("ix_tickets_assignee", "assignee_id"),
        # A thread's merged tickets (Desk.thread, merge). Partial: whole, SQLite took it for every list's
        # `merged_into_id IS NULL`, which nearly every ticket matches, instead of the status or sort index.
        Index(
            "ix_tickets_merged_into",
            "merged_into_id",
            sqlite_where=text("merged_into_id IS NOT NULL"),
            postgresql_where=text("merged_into_id IS NOT NULL"),
        ),
    )


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    author_kind: Mapped[str] = mapped_column(String(10))  # customer | staff | system
    author_id: Mapped[str] = mapped_column(String(120))
    author_name: Mapped[str] = mapped_column(String(200), default="")
    body: Mapped[str] = mapped_column(Text)
    internal: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    ticket: Mapped[Ticket] = relationship(back_populates="messages", foreign_keys=[ticket_id])
    attachments: Mapped[list[Attachment]] = relationship(back_populates="message")


class Attachment(Base):
    """File metadata; the bytes live in the attachment store under `id` (a random token)."""

    __tablename__ = "attachments"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    uploader_id: Mapped[str] = mapped_column(String(120), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    message: Mapped[Message | None] = relationship(back_populates="attachments")


class TicketEvent(Base):
    """The per-ticket log: status, priority, assignee, tag, merge and SLA events with actor and time."""

    __tablename__ = "ticket_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Set on SLA breach events only: the unique key makes "recorded once" hold under concurrency.
    dedupe_key: Mapped[str | None] = mapped_column(String(120))

    __table_args__ = (UniqueConstraint("ticket_id", "dedupe_key", name="uq_ticket_events_dedupe"),)


class AlertState(Base):
    """Per alert group and alert, the newest firing of it the webhook applied (ends_at once resolved).

    Alertmanager delivers at least once and clustered peers deliver out of order, so this is what tells a
    stale notification from a new one (tickets_app.alerts.is_stale). Keyed by the group, not the ticket: a
    group's key moves to its follow-up ticket, and what was already resolved must stay so.
    """

    __tablename__ = "alert_states"
    group_key: Mapped[str] = mapped_column(String(500), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Template(Base):
    __tablename__ = "templates"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    body: Mapped[str] = mapped_column(Text)


class BusinessCalendar(Base):
    __tablename__ = "calendars"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)


class SlaPolicy(Base):
    __tablename__ = "sla_policies"
    id: Mapped[int] = mapped_column(primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    calendar_id: Mapped[int | None] = mapped_column(ForeignKey("calendars.id"))

    calendar: Mapped[BusinessCalendar | None] = relationship()


class StaffUser(Base):
    """Web UI logins for agents and admins (password hashed with argon2id: tickets_app.passwords)."""

    __tablename__ = "staff_users"
    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(300))
