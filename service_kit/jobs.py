"""Periodic jobs that run once per interval across every worker of every replica, through the service's database.

Why the database and not a queue server: the services that need periodic work (the desk's SLA sweep, later
backup restore drills and scheduled reports) already share one PostgreSQL in production and one SQLite file
on one machine, and the work is a handful of named jobs, not a stream of messages. So the schedule is one
table row per job and a row lock decides who runs an occurrence. Rejected:

- rq + rq-scheduler (Redis): a SIGKILLed worker's job is noticed only after its timeout (rq #2015, #1571).
  On Redis Cluster (checked with rq 2.12, redis-py 8.1, three masters) ``Worker(connection=RedisCluster)``
  fails (no ``connection_pool``), its pipelines silently lose MULTI, and a transaction over its untagged
  ``rq:queue:*`` and ``rq:job:*`` keys is refused (CrossSlotTransactionError). And the desk has no Redis.
- procrastinate (PostgreSQL): a job in progress when its worker dies stays "doing" until the heartbeat is
  stale and something retries it, its writes and its job status commit separately, it has no SQLite
  backend (so a second mechanism for the one-machine default), and it brings its own schema and an asyncio
  worker into every granian process.
- APScheduler: several schedulers on one job store each run every job.
- ``pg_try_advisory_lock``: the same idea, but the lock key is a number in a database-wide namespace and the
  schedule still needs a row; locking the row itself gives both, and works on SQLite too (below).

One occurrence, step by step (``Jobs.run_due``):

1. Every process runs one runner thread. It reads the schedule and sleeps until the next due time, at most
   ``jobs.poll_seconds``.
2. For a due job it opens a transaction and claims the row: ``SELECT … FOR UPDATE SKIP LOCKED`` (on
   PostgreSQL a row held by another runner is skipped, never waited for), then ``UPDATE … SET next_due_at
   WHERE next_due_at <= now``. On SQLite that UPDATE takes the database's single write lock, and a row that
   another process advanced meanwhile matches nothing.
3. The job runs in a savepoint of that same transaction, so its writes and the advanced schedule commit
   together: an occurrence is done exactly when its effects are committed. Effects outside the database
   (files, HTTP) are at least once: a runner killed after them but before the commit is run again.
4. A runner that dies mid-job (SIGKILL, OOM kill) closes its connection; PostgreSQL rolls back and
   releases the row as soon as it notices (a backend waiting on a lock notices when the wait ends), and the
   next runner to look finds the occurrence still due: measured 0.16 s after a SIGKILL in
   tests/tickets/test_replica_jobs.py. A runner that goes silent with its connection open (a crashed or
   frozen host, a partition) is ended by PostgreSQL after ``jobs.stalled_seconds`` idle in its transaction
   (``idle_in_transaction_session_timeout``, set for the job's transaction only); its late commit then
   fails, so it cannot double a run. SQLite rolls back a dead process's transaction and drops its lock too.
5. A job that raises is rolled back to its savepoint, logged and counted; the claim still commits, so it
   runs again at its next interval instead of in a loop.

Missed occurrences (every replica down) coalesce into one run. Times are the runners' wall clocks, so keep
the hosts on NTP. A job holds its transaction and row lock while it runs, so jobs should be short or at
least keep talking to the database. SQLite is for one machine (its lock does not work across hosts or
network file systems): there the workers of the one replica share the jobs through the file, a runner
waiting up to the busy timeout for another's write lock.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import Flask
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import DateTime, String, func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from service_kit.db import Database, KitBase
from service_kit.settings import JobsSettings

log = logging.getLogger("service_kit.jobs")
JOB_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # also a metric label value: registered names only
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


def utc_now() -> datetime:
    return datetime.now(UTC)


class JobSchedule(KitBase):
    """One row per job: when it is next due, and who last ran it (operators read this table too)."""

    __tablename__ = "service_kit_jobs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_runner: Mapped[str | None] = mapped_column(String(200), nullable=True)


@dataclass(frozen=True)
class Job:
    """``run(session)`` does one occurrence inside the claiming transaction; it must not commit."""

    name: str
    every: timedelta
    run: Callable[[Session], object]


class Jobs:
    """Flask resource: ``add`` the service's jobs, ``init_app`` for metrics, ``start`` the runner thread."""

    def __init__(self, db: Database, settings: JobsSettings, runner: str | None = None) -> None:
        self.db = db
        self.settings = settings
        self.runner = runner or f"{socket.gethostname()}:{os.getpid()}"
        self.jobs: dict[str, Job] = {}
        self.metrics: JobMetrics | None = None
        self._schedule_ready = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, name: str, every_seconds: float, run: Callable[[Session], object]) -> None:
        if not JOB_NAME.match(name):
            raise ValueError(f"job name {name!r}: expected lower-case letters, digits and _")
        if name in self.jobs:
            raise ValueError(f"job {name!r} is already registered")
        if every_seconds <= 0:
            raise ValueError(f"job {name!r}: the interval must be positive")
        self.jobs[name] = Job(name, timedelta(seconds=every_seconds), run)

    def init_app(self, app: Flask) -> None:
        """Metrics in the kit's registry; call after every ``add`` (label values are the registered names)."""
        kit = app.extensions["service_kit"]
        app.extensions["jobs"] = self
        self.metrics = JobMetrics(kit.metrics.registry, kit.service, list(self.jobs))
        kit.metrics.add_scrape_collector(ScheduleCollector(self, kit.service))

    def start(self) -> None:
        """The runner thread of this process; does nothing without jobs."""
        if self.jobs and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="service-kit-jobs", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """End the runner after the job in progress (if any)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                wait = self.run_due()
                if failing:
                    log.info("jobs: the runner works again")
                failing = False
            except Exception:  # the database is away, or worse: keep the runner alive, log once per outage
                if not failing:
                    log.exception("jobs: a runner pass failed; retrying every %gs", self.settings.poll_seconds)
                failing = True
                wait = self.settings.poll_seconds
            self._stop.wait(wait)

    def run_due(self) -> float:
        """Run each due job this runner can claim; returns the seconds until it should look again."""
        if not self._schedule_ready:
            self._ensure_schedule()
        with self.db.new_session() as session:
            due_at = dict(session.execute(select(JobSchedule.name, JobSchedule.next_due_at)).all())
        wait = self.settings.poll_seconds
        for job in self.jobs.values():
            if self._stop.is_set() or job.name not in due_at:
                continue
            due = _aware(due_at[job.name])
            now = utc_now()
            if due <= now:
                self._run_once(job)
            else:
                wait = min(wait, (due - now).total_seconds())
        return max(wait, 0.0)

    def _ensure_schedule(self) -> None:
        """A row per registered job, due now when new; a shortened interval takes effect at once."""
        now = utc_now()
        with self.db.new_session() as session:
            known = dict(session.execute(select(JobSchedule.name, JobSchedule.next_due_at)).all())
            for job in self.jobs.values():
                if job.name not in known:
                    session.add(JobSchedule(name=job.name, next_due_at=now))
                elif _aware(known[job.name]) > now + job.every:
                    session.execute(
                        update(JobSchedule).where(JobSchedule.name == job.name).values(next_due_at=now + job.every)
                    )
            try:
                session.commit()
            except IntegrityError:
                return  # another process added a row at the same moment; the next pass looks again
        self._schedule_ready = True

    def _run_once(self, job: Job) -> None:
        """Claim the job's due occurrence and run it in the same transaction (see the module docstring)."""
        metrics = self.metrics
        with self.db.new_session() as session:
            claimed = session.scalar(
                select(JobSchedule.next_due_at).where(JobSchedule.name == job.name).with_for_update(skip_locked=True)
            )
            started = utc_now()
            if claimed is None or _aware(claimed) > started:
                return  # held by another runner (PostgreSQL), or already run
            due = _aware(claimed)
            following = due + job.every if due + job.every > started else started + job.every
            advanced = session.execute(
                update(JobSchedule)
                .where(JobSchedule.name == job.name, JobSchedule.next_due_at <= started)
                .values(next_due_at=following, last_started_at=started, last_runner=self.runner)
            )
            if advanced.rowcount != 1:  # type: ignore[attr-defined]
                return  # another process ran it between the read and the write (SQLite)
            if session.get_bind().dialect.name == "postgresql":
                timeout_ms = str(round(self.settings.stalled_seconds * 1000))
                session.execute(select(func.set_config("idle_in_transaction_session_timeout", timeout_ms, True)))
            if metrics:
                metrics.wait[job.name].observe((started - due).total_seconds())
            clock = time.perf_counter()
            failed = False
            try:
                with session.begin_nested():
                    job.run(session)
                session.execute(
                    update(JobSchedule).where(JobSchedule.name == job.name).values(last_success_at=utc_now())
                )
            except Exception:  # the job's own failure: its work is rolled back, the occurrence counts as run
                log.exception("job %s failed", job.name)
                failed = True
            try:
                session.commit()
            except SQLAlchemyError as exc:  # lost the connection or was ended as stalled: another runner retries
                log.warning("job %s could not commit: %s", job.name, exc.__class__.__name__)
                failed = True
            if metrics:
                metrics.run[job.name].observe(time.perf_counter() - clock)
                if failed:
                    metrics.failures[job.name].inc()


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; the kit only stores UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class JobMetrics:
    """What each runner observes, one child per registered job, created up front (zero, not absent)."""

    def __init__(self, registry: CollectorRegistry, service: str, names: list[str]) -> None:
        wait = Histogram(
            "jobs_wait_seconds",
            "From the time a job occurrence was due until a runner started it.",
            ["service", "task"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        run = Histogram(
            "jobs_run_seconds",
            "Time a job occurrence ran, until its transaction committed (failed runs included).",
            ["service", "task"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        failures = Counter(
            "jobs_failures_total",
            "Job occurrences that raised or could not commit.",
            ["service", "task"],
            registry=registry,
        )
        self.wait = {name: wait.labels(service, name) for name in names}
        self.run = {name: run.labels(service, name) for name in names}
        self.failures = {name: failures.labels(service, name) for name in names}


class ScheduleCollector(Collector):
    """Scrape-time gauges from the schedule table, so every worker and replica reports the same numbers."""

    def __init__(self, jobs: Jobs, service: str) -> None:
        self.jobs = jobs
        self.service = service

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "jobs_queue_depth",
                "Job occurrences due and not yet completed: 0 or 1 per job (missed ones coalesce into one run).",
                labels=["service", "task"],
            ),
            GaugeMetricFamily(
                "jobs_last_success_timestamp_seconds",
                "When the job last completed without an error (Unix time); absent until it has.",
                labels=["service", "task"],
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        depth, last_success = self._families()
        try:
            with self.jobs.db.new_session() as session:
                rows = session.execute(
                    select(JobSchedule.name, JobSchedule.next_due_at, JobSchedule.last_success_at)
                ).all()
        except SQLAlchemyError:
            log.exception("could not read the job schedule")
            return
        now = utc_now()
        found = {name: (next_due_at, success) for name, next_due_at, success in rows}
        for name in self.jobs.jobs:
            if name not in found:  # not yet written by the first runner pass
                continue
            next_due_at, success = found[name]
            depth.add_metric([self.service, name], 1.0 if _aware(next_due_at) <= now else 0.0)
            if success is not None:
                last_success.add_metric([self.service, name], _aware(success).timestamp())
        yield depth
        yield last_success
