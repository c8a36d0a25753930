"""Time every SQL statement a service runs: a histogram by fingerprint and a log line for slow ones.

SQLite keeps no statement statistics, so the services measure their own: SQLAlchemy's
``before_cursor_execute`` and ``after_cursor_execute`` events bracket each statement in the process that
runs it, on SQLite and PostgreSQL alike. What is recorded:

- ``db_statement_duration_seconds{service,database,fingerprint,statement_type}``: ``fingerprint`` is
  :func:`service_kit.sqltext.fingerprint` (the shape, never the values), ``database`` names the engine
  (``service`` for the service's own, or what the caller passed, e.g. ``platform``). Labels stay bounded:
  the first ``statement_fingerprints`` distinct fingerprints a process sees get their own series, later
  ones share ``fingerprint="other"``. A service's statements are a fixed set of code paths, so the cap is
  hit only by generated SQL, and then it holds.
- One WARNING line ``slow statement`` for each statement over ``slow_statement_seconds``, with the
  fingerprint, the statement type, the duration and the normalised text (literals as ``?``), never the
  parameters: they carry customers' data and tokens.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from sqlalchemy import Engine, event

from service_kit import sqltext
from service_kit.settings import DatabaseSettings

log = logging.getLogger("service_kit.statements")
STATEMENT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOGGED_TEXT_CHARS = 300
_STARTED = "service_kit_statement_started"


class FingerprintCap:
    """Admits the first ``limit`` distinct fingerprints; every later one is reported as "other"."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._admitted: set[str] = set()
        self._lock = threading.Lock()

    def label(self, fingerprint: str) -> str:
        if fingerprint in self._admitted:
            return fingerprint
        with self._lock:
            if len(self._admitted) < self.limit:
                self._admitted.add(fingerprint)
                return fingerprint
        return sqltext.OTHER


class StatementTimer:
    """One per service (its registry); :meth:`instrument` attaches it to each engine the service uses."""

    def __init__(self, registry: CollectorRegistry, service: str, settings: DatabaseSettings) -> None:
        self.service = service
        self.slow_seconds = settings.slow_statement_seconds
        self.cap = FingerprintCap(settings.statement_fingerprints)
        self.duration = Histogram(
            "db_statement_duration_seconds",
            "SQL statements run by the service, by engine and statement fingerprint (capped; then other).",
            ["service", "database", "fingerprint", "statement_type"],
            buckets=STATEMENT_BUCKETS,
            registry=registry,
        )
        self._shapes: dict[str, tuple[str, str]] = {}  # statement text -> (fingerprint, type): texts repeat
        self._children: dict[tuple[str, str, str], Any] = {}  # (database, fingerprint, type) -> histogram child

    def instrument(self, engine: Engine, database: str = "service") -> None:
        """Time every statement on ``engine``; ``database`` is a fixed name chosen by the caller."""

        def before(_conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool) -> None:
            if context is not None:
                setattr(context, _STARTED, time.perf_counter())

        def after(_conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool) -> None:
            started = getattr(context, _STARTED, None)
            if started is not None:
                self.observe(database, statement, time.perf_counter() - started)

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)

    def observe(self, database: str, statement: str, seconds: float) -> None:
        """Record one statement (the parameters are never passed in, so they cannot leak)."""
        shape = self._shapes.get(statement)
        if shape is None:
            shape = (sqltext.fingerprint(statement), sqltext.statement_type(statement))
            if len(self._shapes) < 10 * self.cap.limit:  # memo only; generated SQL must not grow it forever
                self._shapes[statement] = shape
        fingerprint, kind = shape
        key = (database, fingerprint, kind)
        child = self._children.get(key)
        if child is None:  # labels() takes a lock and builds tuples: a cost on every statement otherwise
            child = self.duration.labels(self.service, database, self.cap.label(fingerprint), kind)
            self._children[key] = child
        child.observe(seconds)
        if seconds >= self.slow_seconds:
            log.warning(
                "slow statement %s (%s) on %s: %.3f s",
                fingerprint,
                kind,
                database,
                seconds,
                extra={
                    "fingerprint": fingerprint,
                    "statement_type": kind,
                    "database": database,
                    "duration_seconds": round(seconds, 6),
                    "statement": sqltext.normalise(statement)[:LOGGED_TEXT_CHARS],
                },
            )
