"""`vibelux-backup serve`: the backup and drill jobs of every store on the kit's scheduler, and /metrics.

Each store's ``schedule()`` names its jobs (service_kit/jobs.py), each run once per its interval across every
replica of this tool: ``full_``, ``incr_`` and ``drill_<store>`` for PostgreSQL and file stores, ``sync_`` and
``drill_`` for SQLite (backups/litestream.py), ``export_`` and ``drill_`` for Redis (backups/redis_state.py).
Run it on the database's host (pgBackRest needs the data directory) as the cluster's owner or root. A job
holds its claiming transaction while it runs, which is why the tool has its own small database and does not
share the services' one.
"""

from __future__ import annotations

from functools import partial

from flask import Flask
from sqlalchemy.orm import Session

from backups.files import FilesStore
from backups.litestream import SqliteStore
from backups.metrics import BackupCollector
from backups.postgres import PostgresStore
from backups.records import BackupRun, record_run
from backups.redis_state import RedisStateStore
from backups.settings import BackupSettings
from backups.store import ArchiverStatus, BackupError, Store
from service_kit.app import ServiceKit
from service_kit.db import Database
from service_kit.index import ServiceDocs
from service_kit.jobs import Jobs

DOCS = ServiceDocs(
    "Backups",
    "Backups, continuous replication and restore drills of the platform's databases; their metrics.",
    "Backups and recovery (backups/)",
    "backups.md",
)


def open_stores(settings: BackupSettings) -> dict[str, Store]:
    """Every configured store, by name, behind the one interface of backups/store.py."""
    stores: dict[str, Store] = {}
    for names, kind in ((settings.postgres, PostgresStore), (settings.sqlite, SqliteStore),
                        (settings.redis, RedisStateStore), (settings.files, FilesStore)):  # fmt: skip
        stores.update({name: kind(name, settings) for name in names})
    return stores


def create_app(settings: BackupSettings, start_jobs: bool = True) -> Flask:
    app = Flask(__name__)
    kit = ServiceKit.from_settings("backup", settings, docs=DOCS)
    kit.init_app(app)
    db = Database()
    db.init_app(app, settings.database.url)
    stores = open_stores(settings)
    jobs = Jobs(db, settings.jobs)
    for name, store in stores.items():
        for kind, every in store.schedule().items():
            job = partial(run_drill, store) if kind == "drill" else partial(run_backup, store, kind)
            jobs.add(f"{kind}_{name}", every, job)
    jobs.init_app(app)
    objectives = {name: store.objective_seconds() for name, store in stores.items()}
    kit.metrics.add_scrape_collector(BackupCollector(db.new_session, objectives, partial(archiver_status, stores)))
    if start_jobs:
        jobs.start()
    return app


def run_backup(store: Store, kind: str, session: Session) -> BackupRun:
    def backup() -> tuple[str, int | None]:
        done = store.back_up(kind)
        return done.detail, done.size_bytes

    return record_run(session, store.name, kind, backup)


def run_drill(store: Store, session: Session) -> BackupRun:
    def drill() -> tuple[str, int | None]:
        result = store.drill()
        return f"restored {result.source}, sentinel of {result.sentinel_written_at.isoformat()} back", None

    return record_run(session, store.name, "drill", drill)


def archiver_status(stores: dict[str, Store], name: str) -> ArchiverStatus | None:
    try:
        return stores[name].archiver_status()
    except BackupError:
        return None  # the store is down: the age is unknown, and BackupTooOld covers a long outage
