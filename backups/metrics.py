"""Scrape-time metrics from the recorded runs (client_python collector style) and the live archiver.

Everything is computed when Prometheus scrapes, from the ``backup_runs`` rows and one ``pg_stat_archiver``
query per store, so the numbers are as fresh as the last run, never minutes behind it (WAL-G exporters
report 3-18 h late because they re-read the repository on their own timer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from backups.records import BACKUP_KINDS, BackupRun
from backups.store import ArchiverStatus

log = logging.getLogger("backups")


class BackupCollector(Collector):
    """``sessions()`` opens a session on the tool's database; ``objectives`` maps each store to the recovery
    point it is built for; ``archiver(store)`` is None when unreachable."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        objectives: dict[str, float],
        archiver: Callable[[str], ArchiverStatus | None],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.objectives = objectives
        self.archiver = archiver
        self.now = now

    def _families(self) -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
        gauges = {
            "backup_last_success_timestamp_seconds": "When the store's last successful backup ended "
            "(full, incr, or a SQLite replica proved current).",
            "backup_size_bytes": "Size of the database in the store's last successful backup.",
            "restore_drill_last_success_timestamp_seconds": "When the store's last restore drill that proved "
            "recoverability ended.",
            "restore_drill_last_failure_timestamp_seconds": "When the store's last failed restore drill ended; "
            "absent until one failed.",
            "restore_drill_duration_seconds": "Recovery time: restore, recovery and checks of the last "
            "successful drill.",
            "recovery_point_age_seconds": "Recovery point: how much committed data a restore now would lose at "
            "most (0 when every written WAL segment is archived).",
            "backup_recovery_point_objective_seconds": "The recovery point the store is built for: archive_timeout, "
            "Litestream's sync interval, or how often an export or file backup runs.",
        }
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            name: GaugeMetricFamily(name, text, labels=["store"]) for name, text in gauges.items()
        }
        families["backup_wal_archive_failures"] = CounterMetricFamily(
            "backup_wal_archive_failures",
            "WAL segments the archiver failed to push (pg_stat_archiver).",
            labels=["store"],
        )
        return families

    def describe(self) -> Iterable[Metric]:
        return self._families().values()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        try:
            with self.sessions() as session:
                latest = self._latest(session)
        except SQLAlchemyError:
            log.exception("could not read the backup runs")
            latest = {}
        for store, objective in self.objectives.items():
            families["backup_recovery_point_objective_seconds"].add_metric([store], objective)
            backups = (latest.get((store, kind, True)) for kind in BACKUP_KINDS)
            backup = max(backups, key=_finished, default=None)
            if backup is not None:
                families["backup_last_success_timestamp_seconds"].add_metric([store], _finished(backup))
                if backup.size_bytes is not None:
                    families["backup_size_bytes"].add_metric([store], backup.size_bytes)
            if drill := latest.get((store, "drill", True)):
                families["restore_drill_last_success_timestamp_seconds"].add_metric([store], _finished(drill))
                families["restore_drill_duration_seconds"].add_metric([store], drill.duration_seconds)
            if failed := latest.get((store, "drill", False)):
                families["restore_drill_last_failure_timestamp_seconds"].add_metric([store], _finished(failed))
            status = self.archiver(store)
            if status is not None:
                families["recovery_point_age_seconds"].add_metric([store], status.recovery_point_age_seconds)
                families["backup_wal_archive_failures"].add_metric([store], status.failed_count)
        yield from families.values()

    @staticmethod
    def _latest(session: Session) -> dict[tuple[str, str, bool], BackupRun]:
        """The newest run per (store, kind, ok)."""
        newest = (
            select(BackupRun.store, BackupRun.kind, BackupRun.ok, func.max(BackupRun.id).label("id"))
            .group_by(BackupRun.store, BackupRun.kind, BackupRun.ok)
            .subquery()
        )
        rows = session.scalars(select(BackupRun).join(newest, BackupRun.id == newest.c.id))
        return {(row.store, row.kind, row.ok): row for row in rows}


def _finished(run: BackupRun | None) -> float:
    if run is None:
        return float("-inf")
    finished = run.finished_at
    return (finished if finished.tzinfo else finished.replace(tzinfo=UTC)).timestamp()
