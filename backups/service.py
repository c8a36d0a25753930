"""`vibelux-backup serve`: the backup and drill jobs of every store on the kit's scheduler, and /metrics.

Each store's ``schedule()`` names its jobs (service_kit/jobs.py), each run once per its interval across every
replica of this tool: ``full_``, ``incr_`` and ``drill_<store>`` for PostgreSQL and file stores, ``sync_`` and
``drill_`` for SQLite (backups/litestream.py), ``export_`` and ``drill_`` for Redis (backups/redis_state.py).
Run it on the database's host (pgBackRest needs the data directory) as the cluster's owner or root. A job
holds its claiming transaction while it runs, which is why the tool has its own small database and does not
share the services' one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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

log = logging.getLogger("backups.service")

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
    watch = ArchiverWatch(stores)
    for name, store in stores.items():
        for kind, every in store.schedule().items():
            job = partial(run_drill, store) if kind == "drill" else partial(run_backup, store, kind)
            jobs.add(f"{kind}_{name}", every, partial(_then_check, watch, name, job))
    jobs.init_app(app)
    objectives = {name: store.objective_seconds() for name, store in stores.items()}
    kit.metrics.add_scrape_collector(BackupCollector(db.new_session, objectives, watch.status))
    if start_jobs:
        jobs.start()
        watch.start()
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


def _then_check(watch: ArchiverWatch, store: str, job: Callable[[Session], BackupRun], session: Session) -> BackupRun:
    """A backup or drill moves the recovery point: the next scrape shows it, not one check later."""
    try:
        return job(session)
    finally:
        watch.check(store)


class ArchiverWatch:
    """Each store's archiver status, checked off the scrape path.

    Asking a store runs Litestream or lists S3, a quarter to a whole second on a busy host, and a scrape that
    does that work made the tool's own /metrics its slowest route (ServiceHighLatency pending at every
    start). A scrape reads the last check; a thread checks every ``every`` seconds, and each backup or
    drill checks its store when it ends. A check older than three periods is unknown (the series is left
    out), as a store that cannot be asked is: BackupTooOld covers a long outage.
    """

    def __init__(self, stores: dict[str, Store], every: float = 15.0, clock: Callable[[], float] = time.monotonic):
        self.stores, self.every, self.clock = stores, every, clock
        self._checked: dict[str, tuple[float, ArchiverStatus | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="archiver-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def check(self, name: str) -> None:
        try:
            status = self.stores[name].archiver_status()
        except BackupError:
            status = None  # the store is down: the age is unknown
        except Exception:  # a bug in one store's check must not stop the others' (nor the thread)
            log.exception("archiver status of %s", name)
            status = None
        with self._lock:
            self._checked[name] = (self.clock(), status)

    def status(self, name: str) -> ArchiverStatus | None:
        with self._lock:
            checked_at, status = self._checked.get(name, (None, None))
        if checked_at is None or self.clock() - checked_at > 3 * self.every:
            return None
        return status

    def _run(self) -> None:
        while not self._stop.is_set():
            for name in self.stores:
                self.check(name)
            self._stop.wait(self.every)
