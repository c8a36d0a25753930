"""``FlagsService``: the flag service's resources (settings, stores, snapshot cache, metrics, recorder),
made once by ``create_app`` and reached by the blueprints through ``current_flags()``.

The blueprints import this module, never ``flags_service.app``, so the app can import them at the top.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import current_app
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, scoped_session

from flags_service.metrics import EvaluationRecorder, FlagMetrics
from flags_service.settings import FlagsSettings
from flags_service.snapshots import SnapshotCache
from flags_service.storage.environments import EnvironmentStore
from flags_service.storage.evaluation_stats import EvaluationStatsStore
from flags_service.storage.flags import Change, FlagStore
from flags_service.storage.sdk_keys import SdkKey, SdkKeyStore
from flags_service.storage.segments import SegmentStore
from service_kit.app import ServiceKit
from service_kit.auth import Auth
from service_kit.db import Database

log = logging.getLogger("flags_service")
WRITE_ATTEMPTS = 3
SDK_KEY_CACHE_LIMIT = 10_000  # guessing tokens cannot grow memory
AnySession = Session | scoped_session[Session]


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
        # Each open SSE stream holds one of the worker's threads; beyond the limit SDKs poll instead.
        self.stream_slots = threading.BoundedSemaphore(settings.flags.max_streams_per_worker)
        self._sdk_keys: dict[str, tuple[SdkKey | None, float]] = {}

    # -- stores over the request's session (or a background one) ------------------------------------
    def flag_store(self, session: AnySession | None = None) -> FlagStore:
        return FlagStore(session or self.db.session, self.environments)

    def segment_store(self, session: AnySession | None = None) -> SegmentStore:
        return SegmentStore(session or self.db.session, self.environments)

    def environment_store(self, session: AnySession | None = None) -> EnvironmentStore:
        return EnvironmentStore(session or self.db.session, self.environments)

    def sdk_key_store(self, session: AnySession | None = None) -> SdkKeyStore:
        return SdkKeyStore(session or self.db.session, self.environments)

    def stats_store(self, session: AnySession | None = None) -> EvaluationStatsStore:
        return EvaluationStatsStore(session or self.db.session)

    def _load_snapshot(self, environment: str) -> dict[str, Any]:
        with self.db.new_session() as session:
            return self.environment_store(session).snapshot(environment)

    def _db_version(self, environment: str) -> int:
        with self.db.new_session() as session:
            return self.environment_store(session).version(environment)

    def _persist_evaluations(self, environment: str, counts: Mapping[str, int]) -> None:
        with self.db.new_session() as session:
            self.stats_store(session).record_evaluations(environment, counts)
            session.commit()

    def ensure_environments(self) -> None:
        with self.db.new_session() as session:
            self.environment_store(session).ensure_environments()
            session.commit()

    # -- writes -----------------------------------------------------------------------------------
    def write(self, action: str, target_type: str, operation: Callable[[], Change]) -> Change:
        """Run ``operation`` (stores over the request's session), audit it and commit, then publish the
        new snapshots.

        SQLite refuses a write whose read snapshot went stale (another writer committed first); the
        operation is then re-run from the start, where its If-Match check answers 412.
        """
        session = self.db.session
        for attempt in range(WRITE_ATTEMPTS):
            try:
                change = operation()
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
            key = self.sdk_key_store(session).find_sdk_key(token)
        if len(self._sdk_keys) > SDK_KEY_CACHE_LIMIT:
            self._sdk_keys.clear()
        self._sdk_keys[token] = (key, now + self.settings.flags.sdk_key_cache_seconds)
        return key

    def stale_counts(self) -> dict[str, float]:
        with self.db.new_session() as session:
            days = self.settings.flags.stale_after_days
            store = self.stats_store(session)
            return {env: len(store.stale_flags(env, stale_after_days=days)) for env in self.environments}

    def last_changes(self) -> dict[str, float]:
        with self.db.new_session() as session:
            return self.environment_store(session).last_changes()

    def snapshot_versions(self) -> dict[str, float]:
        with self.db.new_session() as session:
            return {env: float(version) for env, version in self.environment_store(session).versions().items()}


def current_flags() -> FlagsService:
    """The app's ``FlagsService`` (``create_app`` puts it in ``app.extensions["flags"]``)."""
    service: FlagsService = current_app.extensions["flags"]
    return service
