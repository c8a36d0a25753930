"""Every backup and drill run, kept in the tool's own database; metrics are computed from these rows.

A failed run is a row too (``ok`` false, ``detail`` its one-line reason): the alerts need failures, and a
run that vanished from the record would look like a run that never happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

log = logging.getLogger("backups")
# sync: a SQLite replica proved current; export: a Redis export written
BACKUP_KINDS = ("full", "incr", "sync", "export")


class Base(DeclarativeBase):
    pass


class BackupRun(Base):
    __tablename__ = "backup_runs"
    __table_args__ = (Index("ix_backup_runs_store_kind_finished", "store", "kind", "finished_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # one of BACKUP_KINDS, or drill
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)
    duration_seconds: Mapped[float] = mapped_column(Float)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # backups: the database's size
    detail: Mapped[str] = mapped_column(String(500), default="")  # backup label, drill's backup, or the error


def record_run(session: Session, store: str, kind: str, run: Callable[[], tuple[str, int | None]]) -> BackupRun:
    """Run ``run`` (returns detail and size) and add its row, failed or not; never raises for the run's failure.

    Why not raise: the run executes inside the job scheduler's transaction, which rolls a raising job back,
    and with it the row that records the failure.
    """
    started = datetime.now(UTC)
    clock = time.perf_counter()
    try:
        detail, size = run()
        ok = True
    except Exception as exc:  # any failure is a failed run, recorded and logged loudly
        log.error("%s %s failed: %s", store, kind, exc)
        detail, size, ok = str(exc)[:500], None, False
    row = BackupRun(
        store=store, kind=kind, started_at=started, finished_at=datetime.now(UTC), ok=ok,
        duration_seconds=time.perf_counter() - clock, size_bytes=size, detail=detail,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row
