"""`vibelux-backup serve`: the backup and drill jobs of every store on the kit's scheduler, and /metrics.

Per PostgreSQL store three jobs (service_kit/jobs.py): ``full_<store>``, ``incr_<store>`` and
``drill_<store>``; per SQLite store ``sync_<store>`` and ``drill_<store>`` (backups/litestream.py); each once
per its interval across every replica of this tool. Run it on the database's host (pgBackRest needs
the data directory) as the cluster's owner or root. A job holds its claiming transaction while it runs,
which is why the tool has its own small database and does not share the services' one.
"""

from __future__ import annotations

from functools import partial

from flask import Flask
from sqlalchemy.orm import Session

from backups.litestream import SqliteDrillResult, SqliteStore
from backups.metrics import ArchiverStatus, BackupCollector
from backups.pgbackrest import BackupError
from backups.postgres import PostgresStore
from backups.records import BackupRun, record_run
from backups.settings import BackupSettings
from service_kit.app import ServiceKit
from service_kit.db import Database
from service_kit.jobs import Jobs

Store = PostgresStore | SqliteStore


def create_app(settings: BackupSettings, start_jobs: bool = True) -> Flask:
    app = Flask(__name__)
    kit = ServiceKit.from_settings("backup", settings)
    kit.init_app(app)
    db = Database()
    db.init_app(app, settings.database.url)
    stores: dict[str, Store] = {name: PostgresStore(name, settings) for name in settings.postgres}
    jobs = Jobs(db, settings.jobs)
    for name, config in settings.postgres.items():
        jobs.add(f"full_{name}", config.full_every_seconds, partial(run_backup, stores[name], "full"))
        jobs.add(f"incr_{name}", config.incremental_every_seconds, partial(run_backup, stores[name], "incr"))
        jobs.add(f"drill_{name}", config.drill_every_seconds, partial(run_drill, stores[name]))
    for name, sqlite in settings.sqlite.items():
        stores[name] = SqliteStore(name, settings)
        jobs.add(f"sync_{name}", sqlite.sync_every_seconds, partial(run_backup, stores[name], "sync"))
        jobs.add(f"drill_{name}", sqlite.drill_every_seconds, partial(run_drill, stores[name]))
    jobs.init_app(app)
    kit.metrics.add_scrape_collector(BackupCollector(db.new_session, list(stores), partial(archiver_status, stores)))
    if start_jobs:
        jobs.start()
    return app


def run_backup(store: Store, kind: str, session: Session) -> BackupRun:
    def backup() -> tuple[str, int | None]:
        if isinstance(store, SqliteStore):
            newest = store.sync()
            return f"replica holds txid {newest.max_txid:x}", store.path.stat().st_size
        done = store.backup(kind)
        return f"{done.label} ({done.type})", done.size_bytes

    return record_run(session, store.name, kind, backup)


def run_drill(store: Store, session: Session) -> BackupRun:
    def drill() -> tuple[str, int | None]:
        result = store.drill()
        source = f"txid {result.txid:x}" if isinstance(result, SqliteDrillResult) else result.backup
        return f"restored {source}, sentinel of {result.sentinel_written_at.isoformat()} back", None

    return record_run(session, store.name, "drill", drill)


def archiver_status(stores: dict[str, Store], name: str) -> ArchiverStatus | None:
    try:
        return stores[name].archiver_status()
    except BackupError:
        return None  # the store is down: the age is unknown, and BackupTooOld covers a long outage
