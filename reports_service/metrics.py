"""The reports service's metrics; every label from a fixed set (no report, schedule or customer names).

- ``reports_runs_total{trigger,status}``: trigger schedule, catch_up or manual; status succeeded, kept
  (rendered, no SMTP configured), failed or skipped (past the catch-up limit).
- ``reports_run_failures_total{stage}``: stage query, render or email.
- ``reports_render_seconds``: HTML and PDF rendering of one run, charts included.
- ``reports_query_duration_seconds{source}``: source from the allow-list (reports_service.catalog).
- ``reports_schedules{state}`` and ``reports_schedules_overdue``: from the database at scrape time, so
  every worker and replica reports the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from reports_service.catalog import COHORT_SOURCE, SOURCES
from reports_service.storage import ReportSchedule, utcnow

TRIGGERS = ("schedule", "catch_up", "manual")
STATUSES = ("succeeded", "kept", "failed", "skipped")
STAGES = ("query", "render", "email")
QUERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)
RENDER_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)


class ReportMetrics:
    """Counters and histograms in the kit's registry; every child created up front (zero, not absent)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        runs = Counter(
            "reports_runs_total", "Report runs by trigger and outcome.", ["trigger", "status"], registry=registry
        )
        failures = Counter(
            "reports_run_failures_total",
            "Report runs that failed, by the stage that failed.",
            ["stage"],
            registry=registry,
        )
        self.render_seconds = Histogram(
            "reports_render_seconds",
            "Time to render one report's HTML and PDF.",
            buckets=RENDER_BUCKETS,
            registry=registry,
        )
        query = Histogram(
            "reports_query_duration_seconds",
            "Time to run one report's queries on the platform database.",
            ["source"],
            buckets=QUERY_BUCKETS,
            registry=registry,
        )
        self._runs = {(t, s): runs.labels(t, s) for t in TRIGGERS for s in STATUSES}
        self._failures = {stage: failures.labels(stage) for stage in STAGES}
        self._query = {source: query.labels(source) for source in (*SOURCES, COHORT_SOURCE)}

    def runs(self, trigger: str, status: str) -> Counter:
        return self._runs[(trigger, status)]

    def failures(self, stage: str) -> Counter:
        return self._failures[stage]

    def query_seconds(self, source: str) -> Histogram:
        return self._query[source]


class ScheduleCollector(Collector):
    """Scrape-time gauges from the schedules table."""

    def __init__(self, session: Callable[[], Session], overdue_seconds: float) -> None:
        self.session = session
        self.overdue_seconds = overdue_seconds

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("reports_schedules", "Report schedules by state.", labels=["state"]),
            GaugeMetricFamily(
                "reports_schedules_overdue",
                "Enabled schedules whose next occurrence is overdue by more than reports.overdue_seconds "
                "(the sweep is not running, or cannot keep up).",
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        states, overdue = self._families()
        late = utcnow() - timedelta(seconds=self.overdue_seconds)
        try:
            with self.session() as session:
                counts = dict(
                    session.execute(select(ReportSchedule.enabled, func.count()).group_by(ReportSchedule.enabled)).all()
                )
                behind = session.scalar(
                    select(func.count()).where(ReportSchedule.enabled.is_(True), ReportSchedule.next_run_at < late)
                )
        except SQLAlchemyError:
            return
        states.add_metric(["enabled"], float(counts.get(True, 0)))
        states.add_metric(["disabled"], float(counts.get(False, 0)))
        overdue.add_metric([], float(behind or 0))
        yield states
        yield overdue
