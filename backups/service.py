"""`vibelux-backup serve`: the backup and drill jobs of every store on the kit's scheduler, and /metrics.

Per store three jobs (service_kit/jobs.py): ``full_<store>``, ``incr_<store>`` and ``drill_<store>``, each
once per its interval across every replica of this tool. Run it on the database's host (pgBackRest needs
the data directory) as the cluster's owner or root. A job holds its claiming transaction while it runs,
which is why the tool has its own small database and does not share the services' one.
"""

from __future__ import annotations

from functools import partial

from flask import Flask
from sqlalchemy.orm import Session

from backups.metrics import ArchiverStatus, BackupCollector
from backups.pgbackrest import BackupError
from backups.postgres import PostgresStore
from backups.records import BackupRun, record_run
from backups.settings import BackupSettings
from service_kit.app import ServiceKit
from service_kit.db import Database
from service_kit.jobs import Jobs


def create_app(settings: BackupSettings, start_jobs: bool = True) -> Flask:
    app = Flask(__name__)
    kit = ServiceKit.from_settings("backup", settings)
    kit.init_app(app)
    db = Database()
    db.init_app(app, settings.database.url)
    stores = {name: PostgresStore(name, settings) for name in settings.postgres}
    jobs = Jobs(db, settings.jobs)
    for name, store in stores.items():
        config = settings.postgres[name]
        jobs.add(f"full_{name}", config.full_every_seconds, partial(run_backup, store, "full"))
        jobs.add(f"incr_{name}", config.incremental_every_seconds, partial(run_backup, store, "incr"))
        jobs.add(f"drill_{name}", config.drill_every_seconds, partial(run_drill, store))
    jobs.init_app(app)
    kit.metrics.add_scrape_collector(BackupCollector(db.new_session, list(stores), partial(archiver_status, stores)))
    if start_jobs:
        jobs.start()
    return app


def run_backup(store: PostgresStore, kind: str, session: Session) -> BackupRun:
    def backup() -> tuple[str, int | None]:
        done = store.backup(kind)
        return f"{done.label} ({done.type})", done.size_bytes

    return record_run(session, store.name, kind, backup)


def run_drill(store: PostgresStore, session: Session) -> BackupRun:
    def drill() -> tuple[str, int | None]:
        result = store.drill()
        return f"restored {result.backup}, sentinel of {result.sentinel_written_at.isoformat()} back", None

    return record_run(session, store.name, "drill", drill)


def archiver_status(stores: dict[str, PostgresStore], name: str) -> ArchiverStatus | None:
    try:
        return stores[name].archiver_status()
    except BackupError:
        return None  # the store is down: the age is unknown, and BackupTooOld covers a long outage
