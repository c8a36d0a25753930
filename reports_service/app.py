"""``create_app(settings)``: the reports service's Flask app (report builder, schedules, runs)."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from pathlib import Path

from flask import Flask
from sqlalchemy.orm import Session

from reports_service import reports_api, schedules_api
from reports_service.api import api
from reports_service.metrics import ReportMetrics, ScheduleCollector
from reports_service.platform import PlatformData
from reports_service.scheduler import Scheduler
from reports_service.settings import ReportsSettings
from reports_service.storage import utcnow
from reports_service.summary import refresh
from service_kit.app import ServiceKit
from service_kit.auth import Auth
from service_kit.db import Database
from service_kit.index import ServiceDocs
from service_kit.jobs import Jobs

MIGRATIONS = Path(__file__).with_name("migrations")
DOCS = ServiceDocs(
    "Reports",
    "Saved reports over the platform data and API usage, and schedules that mail them as PDFs.",
    "Report builder and scheduled reports (reports_service/, :8083)",
    "reports.md",
)
SWEEP_JOB = "report_schedules"
SUMMARY_JOB = "usage_summary"


def _refresh_summary(platform: PlatformData, settle_seconds: float, _session: Session) -> None:
    """The kit's job: the platform database is another database, so the job's own session is not used."""
    refresh(platform.get_engine(), utcnow(), timedelta(seconds=settle_seconds))


def create_app(settings: ReportsSettings | None = None, *, start_jobs: bool = True) -> Flask:
    """``start_jobs=False``: no runner thread (tests drive ``app.extensions["jobs"].run_due()``)."""
    settings = settings or ReportsSettings()
    app = Flask(__name__)
    kit = ServiceKit.from_settings("reports", settings, docs=DOCS)
    kit.init_app(app)
    db = Database()
    db.init_app(app, settings.database.url)
    Auth(db).init_app(app)
    platform = PlatformData()
    platform.init_app(app, settings.platform.url)
    kit.statements.instrument(platform.get_engine(), "platform")
    metrics = ReportMetrics(kit.metrics.registry)
    scheduler = Scheduler(settings, platform.get_engine, metrics)
    jobs = Jobs(db, settings.jobs)
    jobs.add(SWEEP_JOB, settings.reports.sweep_seconds, scheduler.sweep)
    if settings.platform.daily_summary:
        jobs.add(
            SUMMARY_JOB,
            settings.platform.summary_refresh_seconds,
            partial(_refresh_summary, platform, settings.platform.summary_settle_seconds),
        )
    jobs.init_app(app)
    kit.metrics.add_scrape_collector(ScheduleCollector(db.new_session, settings.reports.overdue_seconds))
    app.extensions.update(reports_settings=settings, reports_metrics=metrics, reports_scheduler=scheduler)
    api.init_app(app)
    app.register_blueprint(reports_api.bp)
    app.register_blueprint(schedules_api.bp)
    if start_jobs:
        jobs.start()
    return app
