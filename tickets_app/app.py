"""The support desk's app factory: the service kit, the database, the API, the web UI, the periodic jobs."""

from __future__ import annotations

import os
import secrets
import threading
import time
from functools import partial

from flask import Flask, g, request
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from service_kit.alerting import AlertmanagerClient
from service_kit.alerting import api as alert_acks
from service_kit.app import ServiceKit
from service_kit.auth import Auth
from service_kit.db import Database
from service_kit.jobs import Jobs
from service_kit.server import RUN_DIR
from tickets_app import admin_api, api, runbooks, web
from tickets_app.attachments import AttachmentStore, Scanner
from tickets_app.desk import Desk
from tickets_app.metrics import SupportCollector
from tickets_app.resources import Resources
from tickets_app.search import index_for_dialect
from tickets_app.settings import TicketsSettings


def create_app(settings: TicketsSettings, scanner: Scanner | None = None, start_sweeper: bool = True) -> Flask:
    """Build the desk. The database must be migrated first (`vibelux-tickets db upgrade` or `serve`)."""
    app = Flask(__name__)
    kit = ServiceKit.from_settings("tickets", settings)
    kit.init_app(app)
    db = Database()
    db.init_app(app, settings.database.url, settings.database.echo)
    api.api.init_app(app)  # first: the merged /openapi.json takes its title from the first document
    Auth(db, settings.jwt).init_app(app)
    resources = Resources(
        settings=settings,
        db=db,
        desk=build_desk(settings),
        attachment_store=AttachmentStore(settings.attachments.directory),
        scanner=scanner,
    )
    resources.init_app(app)
    kit.metrics.add_scrape_collector(SupportCollector(db.new_session, resources.at_risk, lambda: resources.clock()))
    app.config.update(
        SECRET_KEY=settings.web.secret_key or _shared_session_key(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.web.secure_cookie,
        SESSION_COOKIE_NAME="vbx_desk",
    )
    if settings.database.url.startswith("sqlite"):
        _serialize_writes(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(admin_api.bp)
    app.register_blueprint(web.bp)
    app.register_blueprint(runbooks.bp)  # what every alert's runbook_url opens (config/urls.yml)
    # Agents acknowledge alerts from the desk: an ack is an Alertmanager silence, audited here.
    alert_acks.init_app(app, AlertmanagerClient(settings.alerts.alertmanager_url))

    # Once per interval across every worker and replica: the kit's jobs claim each run in the database.
    jobs = Jobs(db, settings.jobs)
    if settings.sla.sweep_interval_seconds > 0:
        jobs.add("sla_sweep", settings.sla.sweep_interval_seconds, partial(_sla_sweep, resources))
    jobs.init_app(app)
    if start_sweeper:
        jobs.start()
    return app


def _serialize_writes(app: Flask) -> None:
    """SQLite has one writer: queue this process's writing requests on a lock instead of letting every
    thread spin in SQLite's busy handler (whose back-off sleeps up to 100 ms a try)."""
    lock = threading.Lock()

    @app.before_request
    def take() -> None:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            lock.acquire()
            g.holds_write_lock = True

    @app.teardown_request
    def give(_exc: BaseException | None) -> None:
        if g.pop("holds_write_lock", False):
            lock.release()


def build_desk(settings: TicketsSettings) -> Desk:
    return Desk(
        index_for_dialect(make_url(settings.database.url).get_backend_name()),
        at_risk_seconds=settings.sla.at_risk_minutes * 60,
        auto_close_days=settings.sla.auto_close_days,
    )


def _shared_session_key() -> str:
    """Without a configured key, one generated key in the run directory, shared by all workers (O_EXCL
    makes exactly one of them write it)."""
    path = RUN_DIR / "tickets-session-key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another worker may be between create and write
            key = path.read_text().strip()
            if key:
                return key
            time.sleep(0.01)
        raise RuntimeError(f"{path} is empty; delete it and restart") from None
    key = secrets.token_urlsafe(48)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key)
    return key


def _sla_sweep(resources: Resources, session: Session) -> None:
    """Records breaches whose deadline passed without a ticket change, and auto-closes resolved tickets."""
    resources.desk.sweep(session, resources.clock())
