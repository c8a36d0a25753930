"""Scheduled reports: cron occurrences, each run once across every worker and replica, none lost to a restart.

The sweep is one of the kit's periodic jobs (``service_kit.jobs``, job ``report_schedules``): one runner
at a time claims it with a row lock and runs it inside that claiming transaction. So, step by step:

1. The sweep reads the enabled schedules whose ``next_run_at`` has passed.
2. For each, the occurrences from ``next_run_at`` up to now (croniter, in the schedule's time zone). After
   downtime there may be many: the latest one and at most ``reports.catch_up_limit`` before it are run
   (trigger ``catch_up`` for the older ones); the older ones are counted as skipped, on the schedule and in
   ``reports_runs_total{status="skipped"}``, never run in a burst.
3. Each occurrence runs the saved report as of its scheduled time (a relative range ends then), renders
   the PDF and mails it; the run row (unique per schedule and scheduled time) keeps the PDF for download.
   A failure at any stage is recorded on the run and counted in ``reports_run_failures_total{stage}``.
4. ``next_run_at`` moves past what ran, in the same transaction as the runs: the schedule, the runs and
   their PDFs commit together, or not at all. A runner killed mid-sweep leaves the occurrences due, and the
   next runner (of any replica) runs them. The one effect outside the database, the mail, is at least once
   in that window (sent, then killed before the commit); its fixed Message-ID marks the copy.
5. At most ``reports.max_runs_per_sweep`` occurrences per sweep: the sweep holds the job's claim while it
   renders (SQLite's write lock too), so each sweep stays short and the rest go in the next one.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import TypeAdapter
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from reports_service.mailer import DeliveryError, build_message, send
from reports_service.metrics import ReportMetrics
from reports_service.pdf import render_pdf
from reports_service.query import run_report
from reports_service.schemas import ReportSpec
from reports_service.settings import ReportsSettings
from reports_service.storage import ReportRun, ReportSchedule, SavedReport, aware, utcnow
from service_kit.errors import APIError

log = logging.getLogger("reports_service.scheduler")
spec_adapter: TypeAdapter[Any] = TypeAdapter(ReportSpec)
MAX_SCAN = 100_000  # occurrences looked at per schedule and sweep: a minutely cron after ~70 days down
_FIELDS = re.compile(r"^\S+( \S+){4}$")


def cron_problem(expression: str) -> str | None:
    """What is wrong with a cron expression (five fields, as croniter reads them), or None."""
    if not _FIELDS.match(expression.strip()) or not croniter.is_valid(expression):
        return "a cron expression of five fields: minute hour day-of-month month day-of-week, e.g. 0 7 * * 1"
    return None


def zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def next_after(expression: str, timezone: str, moment: datetime) -> datetime:
    """The first occurrence strictly after ``moment``, as aware UTC."""
    local = moment.astimezone(zone(timezone) or UTC)
    following: datetime = croniter(expression, local).get_next(datetime)
    return following.astimezone(UTC)


@dataclass(frozen=True)
class Plan:
    """What a sweep does with one schedule: the occurrences to run (oldest first) and how many to skip."""

    run: list[datetime]
    skipped: int


def plan_occurrences(expression: str, timezone: str, due: datetime, now: datetime, catch_up_limit: int) -> Plan:
    """Occurrences in [due, now], keeping the latest ``1 + catch_up_limit`` (pure: no clock, no I/O)."""
    kept: deque[datetime] = deque(maxlen=1 + catch_up_limit)
    seen = 0
    moment = due - timedelta(seconds=1)
    while seen < MAX_SCAN:
        occurrence = next_after(expression, timezone, moment)
        if occurrence > now:
            break
        kept.append(occurrence)
        seen += 1
        moment = occurrence
    return Plan(list(kept), seen - len(kept))


def message_id(schedule_id: int, when: datetime, from_address: str) -> str:
    domain = from_address.rsplit("@", 1)[-1] or "vibelux-reports"
    return f"<report-{schedule_id}-{when.astimezone(UTC):%Y%m%dT%H%M%SZ}@{domain}>"


class Scheduler:
    """Runs reports (a schedule's occurrences in the sweep, or one on request) and delivers them."""

    def __init__(
        self,
        settings: ReportsSettings,
        platform: Callable[[], Engine],
        metrics: ReportMetrics,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.platform = platform
        self.metrics = metrics
        self.clock = clock

    # -- the sweep (service_kit.jobs runs it in the claiming transaction; it never commits) ------------
    def sweep(self, session: Session) -> None:
        now = self.clock()
        budget = self.settings.reports.max_runs_per_sweep
        due = session.scalars(
            select(ReportSchedule)
            .where(ReportSchedule.enabled.is_(True), ReportSchedule.next_run_at <= now)
            .order_by(ReportSchedule.next_run_at, ReportSchedule.id)
        ).all()
        for schedule in due:
            if budget <= 0:
                break
            plan = plan_occurrences(
                schedule.cron, schedule.timezone, aware(schedule.next_run_at), now, self.settings.reports.catch_up_limit
            )
            if plan.skipped:
                schedule.skipped_runs += plan.skipped
                self.metrics.runs("schedule", "skipped").inc(plan.skipped)
                log.warning(
                    "schedule %s: %d missed occurrences past the catch-up limit skipped", schedule.id, plan.skipped
                )
            report = session.get(SavedReport, schedule.report_id)
            done = 0
            for index, when in enumerate(plan.run):
                if budget <= 0:
                    break
                trigger = "schedule" if index == len(plan.run) - 1 else "catch_up"
                if report is not None and not self._ran(session, schedule.id, when):
                    self.run(session, report, when, trigger, schedule)
                schedule.last_run_at = when
                done += 1
                budget -= 1
            if done == len(plan.run):
                schedule.next_run_at = next_after(schedule.cron, schedule.timezone, now)
            else:  # the rest is still due; the next sweep finds exactly those (no more skipping)
                schedule.next_run_at = plan.run[done]
        cutoff = now - timedelta(days=self.settings.reports.keep_runs_days)
        session.execute(delete(ReportRun).where(ReportRun.started_at < cutoff))

    @staticmethod
    def _ran(session: Session, schedule_id: int, when: datetime) -> bool:
        """Whether the occurrence has a run already (only if next_run_at was moved back by hand): then it
        is not run again, where the unique constraint would fail the whole sweep."""
        found = session.scalar(
            select(ReportRun.id).where(ReportRun.schedule_id == schedule_id, ReportRun.scheduled_for == when)
        )
        return found is not None

    # -- one run -------------------------------------------------------------------------------------
    def run(
        self,
        session: Session,
        report: SavedReport,
        when: datetime,
        trigger: str,
        schedule: ReportSchedule | None = None,
        recipients: list[str] | None = None,
    ) -> ReportRun:
        """Render ``report`` as of ``when``, mail it to the schedule's recipients, keep the PDF; adds the run
        to ``session`` (the caller commits). Failures are recorded on the run, not raised."""
        to = list(recipients if recipients is not None else (schedule.recipients if schedule else []))
        run = ReportRun(
            schedule_id=schedule.id if schedule else None,
            report_id=report.id,
            trigger=trigger,
            scheduled_for=when,
            started_at=self.clock(),
            status="failed",
            delivered_to=[],
        )
        stage = "query"
        try:
            spec = spec_adapter.validate_python(report.spec)
            clock = time.perf_counter()
            result = run_report(
                self.platform(),
                spec,
                when,
                self.settings.reports.max_rows,
                self.settings.platform.query_timeout_seconds,
                self.settings.platform.daily_summary,
            )
            self.metrics.query_seconds(spec.source).observe(time.perf_counter() - clock)
            stage = "render"
            document = render_pdf(
                report.name, report.description, report.spec, result, when, self.settings.reports.chart_dpi
            )
            self.metrics.render_seconds.observe(document.seconds)
            run.pdf, run.pdf_bytes, run.render_seconds = document.pdf, len(document.pdf), document.seconds
            stage = "email"
            if self.settings.smtp.host and to:
                run.delivered_to = self._mail(report, run, schedule, when, document.pdf, to)
                run.status = "succeeded"
            else:
                run.status = "kept"  # no SMTP server configured (or no recipients): kept for download only
        except (APIError, DeliveryError, Exception) as exc:  # every failure is recorded on the run
            run.status = "failed"
            run.error = f"{stage}: {_describe(exc)}"[:500]
            self.metrics.failures(stage).inc()
            if stage != "email":
                log.exception("report %s (%s run for %s) failed at %s", report.id, trigger, when, stage)
            else:
                log.warning("report %s (%s run for %s) was not delivered: %s", report.id, trigger, when, run.error)
        run.finished_at = self.clock()
        self.metrics.runs(trigger, run.status).inc()
        session.add(run)
        session.flush()
        return run

    def _mail(
        self,
        report: SavedReport,
        run: ReportRun,
        schedule: ReportSchedule | None,
        when: datetime,
        pdf: bytes,
        to: list[str],
    ) -> list[str]:
        smtp = self.settings.smtp
        stamp = when.astimezone(UTC)
        ident = (
            message_id(schedule.id, when, smtp.from_address)
            if schedule is not None and run.trigger != "manual"
            else f"<report-{report.id}-manual-{time.time_ns()}@{smtp.from_address.rsplit('@', 1)[-1]}>"
        )
        message = build_message(
            smtp,
            to,
            f"{report.name} ({stamp:%Y-%m-%d %H:%M} UTC)",
            f"The report {report.name!r} as of {stamp:%Y-%m-%d %H:%M} UTC is attached as a PDF.\n",
            pdf,
            _filename(report.name, stamp),
            ident,
            stamp,
        )
        return send(smtp, message)


def _filename(name: str, when: datetime) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:60] or "report"
    return f"{slug}-{when:%Y%m%dT%H%MZ}.pdf"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, APIError):
        return exc.message + (f" {exc.details}" if exc.details else "")
    if isinstance(exc, DeliveryError):
        return str(exc)
    return type(exc).__name__
