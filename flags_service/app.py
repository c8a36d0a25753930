"""``create_app(settings)``: the flag service's Flask app (admin API, OFREP, SDK endpoints)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, scoped_session

from flags_service.metrics import EnvironmentGaugeCollector, EvaluationRecorder, FlagMetrics, ScalarGaugeCollector
from flags_service.model import InvalidDocument
from flags_service.settings import FlagsSettings
from flags_service.snapshots import SnapshotCache
from flags_service.storage import (
    AlreadyExists,
    Change,
    FlagNotFound,
    FlagStore,
    InUse,
    SdkKey,
    StaleVersion,
    environments_table,
)
from service_kit.app import ServiceKit
from service_kit.auth import Auth
from service_kit.db import Database
from service_kit.errors import error_response

MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger("flags_service")
WRITE_ATTEMPTS = 3


class FlagsService:
    """The service's resources in one place: database, auth, snapshot cache, metrics, recorder."""

    def __init__(self, settings: FlagsSettings, kit: ServiceKit, db: Database, auth: Auth) -> None:
        self.settings = settings
        self.kit = kit
        self.db = db
        self.auth = auth
        self.environments = list(settings.flags.environments)
        self.metrics = FlagMetrics(kit.metrics.registry)
        self.cache = SnapshotCache(
            self._load_snapshot,
            self._db_version,
            settings.redis,
            key_prefix=settings.redis.key_prefix,
            socket_timeout=settings.redis.socket_timeout_seconds,
            db_poll_seconds=settings.flags.db_poll_seconds,
        )
        self.recorder = EvaluationRecorder(
            self.metrics, self._persist_evaluations, settings.flags.evaluation_flush_seconds
        )
        self._sdk_keys: dict[str, tuple[SdkKey | None, float]] = {}

    # -- sessions and stores ----------------------------------------------------------------------
    def store(self, session: Session | scoped_session[Session] | None = None) -> FlagStore:
        return FlagStore(session or self.db.session, self.environments, self.settings.flags.tiers)

    @contextmanager
    def background_store(self) -> Iterator[FlagStore]:
        with self.db.new_session() as session:
            yield self.store(session)
            session.commit()

    def _load_snapshot(self, environment: str) -> dict[str, Any]:
        with self.background_store() as store:
            return store.snapshot(environment)

    def _db_version(self, environment: str) -> int:
        with self.db.new_session() as session:
            return session.execute(
                select(environments_table.c.version).where(environments_table.c.name == environment)
            ).scalar_one()

    def _persist_evaluations(self, environment: str, counts: Mapping[str, int]) -> None:
        with self.background_store() as store:
            store.record_evaluations(environment, counts)

    def ensure_environments(self) -> None:
        with self.background_store() as store:
            store.ensure_environments()

    # -- writes -----------------------------------------------------------------------------------
    def write(self, action: str, target_type: str, operation: Callable[[FlagStore], Change]) -> Change:
        """Run ``operation``, audit it and commit, then publish the new snapshots.

        SQLite refuses a write whose read snapshot went stale (another writer committed first); the
        operation is then re-run from the start, where its If-Match check answers 412.
        """
        session = self.db.session
        for attempt in range(WRITE_ATTEMPTS):
            try:
                change = operation(self.store(session))
                self.auth.record(f"{target_type}.{action}", target_type, change.key, change.before, change.after)
                session.commit()
                break
            except OperationalError:
                session.rollback()
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
            except Exception:
                session.rollback()
                raise
        for environment in change.environments:
            self.metrics.changes.labels(environment, action if target_type == "flag" else "segment").inc()
        try:
            self.cache.publish(change.environments)
        except Exception:
            log.exception("publishing the change failed; replicas will pick it up from the database")
        return change

    # -- SDK keys ---------------------------------------------------------------------------------
    def sdk_key(self, token: str) -> SdkKey | None:
        """Resolve an SDK key, cached for ``sdk_key_cache_seconds`` (revocation takes that long)."""
        now = time.monotonic()
        cached = self._sdk_keys.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        with self.db.new_session() as session:
            key = self.store(session).find_sdk_key(token)
        if len(self._sdk_keys) > 10_000:
            self._sdk_keys.clear()  # bounded: guessing tokens cannot grow memory
        self._sdk_keys[token] = (key, now + self.settings.flags.sdk_key_cache_seconds)
        return key

    def stale_counts(self) -> dict[str, float]:
        with self.background_store() as store:
            days = self.settings.flags.stale_after_days
            return {env: len(store.stale_flags(env, stale_after_days=days)) for env in self.environments}

    def snapshot_versions(self) -> dict[str, float]:
        with self.background_store() as store:
            return {env: float(version) for env, version in store.environment_versions().items()}


def current_flags() -> FlagsService:
    service: FlagsService = current_app.extensions["flags"]
    return service


def _register_domain_errors(app: Flask) -> None:
    """Storage's domain errors answer in the kit's JSON error shape."""

    @app.errorhandler(InvalidDocument)
    def invalid(exc: InvalidDocument) -> ResponseReturnValue:
        return error_response(422, "validation_error", "The request has invalid fields.", exc.errors)

    @app.errorhandler(StaleVersion)
    def stale(exc: StaleVersion) -> ResponseReturnValue:
        details = {} if exc.current is None else {"current_version": exc.current}
        message = "The resource changed since you read it; read it again and retry."
        return error_response(412, "precondition_failed", message, details)

    @app.errorhandler(FlagNotFound)
    def not_found(exc: FlagNotFound) -> ResponseReturnValue:
        return error_response(404, "not_found", f"Not found: {exc.args[0]}.")

    @app.errorhandler(AlreadyExists)
    def exists(exc: AlreadyExists) -> ResponseReturnValue:
        return error_response(409, "conflict", f"{exc.args[0]} already exists.", {"key": "already exists"})

    @app.errorhandler(InUse)
    def in_use(exc: InUse) -> ResponseReturnValue:
        return error_response(409, "conflict", f"Still in use: {exc.args[0]}.")


def create_app(settings: FlagsSettings | None = None) -> Flask:
    from flags_service.admin import admin_blueprint
    from flags_service.ofrep import ofrep_blueprint
    from flags_service.sdk_api import sdk_blueprint

    settings = settings or FlagsSettings()
    app = Flask(__name__)
    kit = ServiceKit.from_settings("flags", settings)
    kit.init_app(app)
    db = Database()
    db.init_app(app, settings.database.url)
    auth = Auth(db)
    auth.init_app(app)
    service = FlagsService(settings, kit, db, auth)
    app.extensions["flags"] = service
    service.ensure_environments()
    kit.metrics.add_scrape_collector(
        EnvironmentGaugeCollector(
            "flags_snapshot_version", "Current snapshot version per environment.", service.snapshot_versions
        )
    )
    kit.metrics.add_scrape_collector(
        EnvironmentGaugeCollector(
            "flags_stale_flags", "Flags past expiry or not evaluated lately, per environment.", service.stale_counts
        )
    )
    # Without Redis the service still serves, from the database: degraded, never a failed readiness.
    if service.cache.uses_redis:
        kit.health.add_check("redis", service.cache.readiness)
        kit.metrics.add_scrape_collector(
            ScalarGaugeCollector(
                "flags_redis_connected",
                "1 while the answering process follows snapshot changes over Redis; 0: serving from the database.",
                lambda: float(service.cache.redis_connected),
            )
        )
    _register_domain_errors(app)
    app.register_blueprint(admin_blueprint(service))
    app.register_blueprint(ofrep_blueprint(service))
    app.register_blueprint(sdk_blueprint(service))
    return app
