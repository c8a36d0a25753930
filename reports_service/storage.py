"""The service's own tables (its database, not the platform's): saved reports, schedules, and runs with
their PDFs, and who may see and change each report.

Access, in one place (``can_view``, ``can_edit``): admins see and change everything; a report's owner (the
caller who made it) sees and changes it; a role listed in its ``shared_with`` sees and runs it. A report
the caller may not see answers 404, like one that does not exist. Schedules and runs follow their report.
PDFs are kept in the database, so every replica can serve the download of a run another one rendered.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column

from service_kit.auth import Principal


class Base(DeclarativeBase):
    """Declarative base of the reports service's tables (Alembic: reports_service/migrations)."""


metadata = Base.metadata


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; this service only stores UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else aware(value).isoformat().replace("+00:00", "Z")


class SavedReport(Base):
    __tablename__ = "reports_saved"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    shared_with: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "spec": self.spec,
            "owner": self.owner,
            "shared_with": list(self.shared_with),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


class ReportSchedule(Base):
    __tablename__ = "reports_schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports_saved.id", ondelete="CASCADE"), index=True)
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    recipients: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_run_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    skipped_runs: Mapped[int] = mapped_column(Integer, default=0)  # occurrences past the catch-up limit
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_reports_schedules_due", "enabled", "next_run_at"),)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "report_id": self.report_id,
            "cron": self.cron,
            "timezone": self.timezone,
            "recipients": list(self.recipients),
            "enabled": self.enabled,
            "next_run_at": iso(self.next_run_at),
            "last_run_at": iso(self.last_run_at),
            "skipped_runs": self.skipped_runs,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
        }


class ReportRun(Base):
    """One rendering of a report: an occurrence of a schedule (unique per schedule and time) or manual."""

    __tablename__ = "reports_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_id: Mapped[int | None] = mapped_column(
        ForeignKey("reports_schedules.id", ondelete="SET NULL"), nullable=True
    )
    report_id: Mapped[int] = mapped_column(ForeignKey("reports_saved.id", ondelete="CASCADE"), index=True)
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | catch_up | manual
    scheduled_for: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # succeeded | kept (no SMTP configured) | failed
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    delivered_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    pdf: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, nullable=True))
    pdf_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    render_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        # the backstop of "exactly once": one run per occurrence of a schedule, whatever the replicas do
        UniqueConstraint("schedule_id", "scheduled_for", name="uq_reports_runs_occurrence"),
        Index("ix_reports_runs_schedule", "schedule_id", "id"),
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "schedule_id": self.schedule_id,
            "report_id": self.report_id,
            "trigger": self.trigger,
            "scheduled_for": iso(self.scheduled_for),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "status": self.status,
            "error": self.error,
            "delivered_to": list(self.delivered_to or []),
            "pdf_bytes": self.pdf_bytes,
            "render_seconds": None if self.render_seconds is None else round(self.render_seconds, 3),
        }


AUTHOR_ROLES = ("agent",)  # besides admin: who may build reports and ad-hoc queries
READER_ROLES = ("agent", "viewer", "service")  # who may read reports shared with their role


def can_view(principal: Principal, report: SavedReport) -> bool:
    return principal.role == "admin" or report.owner == principal.id or principal.role in report.shared_with


def can_edit(principal: Principal, report: SavedReport) -> bool:
    return principal.role == "admin" or report.owner == principal.id
