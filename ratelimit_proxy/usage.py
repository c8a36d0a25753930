"""API usage rollups (issue 15): per key and minute, which route templates were called with which status
class, how fast, and how many calls the limits refused, in the platform database's ``api_usage_rollups``
(exporters/business/schema.py), which the reports service reads.

No request writes to the database. In each worker process:
1. ``UsageRollups.record`` (the request path, once the response head is ready): one dict update under a
   lock, 1 to 3 µs of CPU (bench/RESULTS.md). A call that needs a new row while the worker already holds
   ``usage.max_rows`` distinct rows (buffered plus not yet written; about 340 bytes each) is dropped and
   counted, never waited for.
2. Every ``usage.flush_seconds`` the writer thread swaps the buffer for an empty one (under the lock, O(1))
   and folds it into the rows it has not written yet.
3. It writes them in batches of ``usage.batch_rows``: one INSERT ... ON CONFLICT DO UPDATE per batch that
   adds the counts to the row another worker or replica wrote for the same minute (SQLAlchemy's SQLite and
   PostgreSQL inserts), every batch in one transaction. Rows go in primary-key order, so two writers on
   PostgreSQL take their row locks in the same order and cannot deadlock.
4. When the database is down, slow or locked, the transaction rolls back and the rows wait for the next
   flush while requests go on being served and counted, up to the cap. Rows the database refuses for good
   (anything but a connection, lock or timeout error) are dropped and counted, so one bad row cannot stop
   every later flush.
5. At shutdown the writer flushes once more, retrying for up to ``usage.timeout_seconds`` (every worker
   writes at that moment). Granian's workers are multiprocessing children, which skip ``atexit``: the
   flush is a ``multiprocessing.util.Finalize``, run at exit in children and parents alike. A worker waits
   at most ``SHUTDOWN_WAIT_SECONDS`` for it, since granian kills a worker 10 s after asking it to stop;
   rows still unwritten then are lost, and logged.

A failed flush whose commit reached the database but whose answer did not is retried, so such a batch is
counted twice: the one inexactness, and it needs the connection to fail inside the commit's round trip.

Why not a write per request: a round trip to the database on every call, and a slow database would slow
the proxy. Why not a queue of calls to the thread: a put costs what the dict update costs, and the queue
holds a tuple per call instead of a row per minute.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from fnmatch import translate
from multiprocessing.util import Finalize
from typing import Any

import sqlalchemy
from sqlalchemy import String, case, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from exporters.business.schema import LATENCY_BUCKETS_MS, STATUS_CLASSES, api_usage_rollups
from ratelimit_proxy.metrics import ProxyMetrics
from ratelimit_proxy.settings import LimitSettings, UsageSettings

log = logging.getLogger("ratelimit_proxy.usage")

ANONYMOUS = "anonymous"  # the key_id of calls without a (known) key
OTHER = "other"  # the route of a path no template matches
EPOCH = datetime(1970, 1, 1)
KEY_COLUMNS = ("minute", "key_id", "route", "status_class")
BUCKET_COLUMNS = tuple(f"latency_le_{bucket}ms" for bucket in LATENCY_BUCKETS_MS)
MAX_LENGTHS = {c.name: c.type.length for c in api_usage_rollups.columns if isinstance(c.type, String) and c.type.length}
SHUTDOWN_WAIT_SECONDS = 8.0
SEEN_PATHS, SEEN_PATH_LENGTH = 4096, 200  # paths (of at most 200 characters) whose template a worker keeps
MAX_LATENCY_MS = 9_999_999.999  # latency_max_ms is NUMERIC(10, 3)
# What a worker can wait out (and keep its rows); any other database error drops the batch.
TRANSIENT_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)

# One row: calls, refused, latency sum (ms), latency max (ms), calls per latency bucket (not cumulative;
# the last counts calls above the largest bucket), tier, owner.
Row = list[Any]
Key = tuple[int, str, str, str]  # minute (epoch seconds), key_id, route, status class
CALLS, REFUSED, LATENCY_SUM, LATENCY_MAX, FIRST_BUCKET = 0, 1, 2, 3, 4
TIER, OWNER = FIRST_BUCKET + len(LATENCY_BUCKETS_MS) + 1, FIRST_BUCKET + len(LATENCY_BUCKETS_MS) + 2


def _status_class(status: int) -> str:
    return STATUS_CLASSES[min(max(status // 100, 1), 5) - 1]


_STATUS_CLASS_OF = tuple(_status_class(status) for status in range(1000))  # a lookup: 5x cheaper than the sums


def status_class(status: int) -> str:
    """``1xx`` to ``5xx``; a status outside 100-599 (only an odd upstream sends one) counts as ``5xx``."""
    return _STATUS_CLASS_OF[status] if 0 <= status < 1000 else "5xx"


class RouteTemplates:
    """The rollups' route column: the first glob matching the path, of ``limits.routes``' paths, then
    ``limits.ai_paths``, then ``usage.routes``; "other" when none does. Bounded by the config, never a raw
    path. Methods are not part of it: one path is one route whatever the method."""

    def __init__(self, globs: Iterable[str]) -> None:
        self.globs = tuple(dict.fromkeys(globs))
        # One regex of named alternatives, tried in order: one match per request, whatever the count.
        alternatives = "|".join(f"(?P<t{i}>{translate(glob)})" for i, glob in enumerate(self.globs))
        self._regex = re.compile(alternatives) if self.globs else None
        # The template of paths seen, since most calls repeat a path: a dict lookup is 30 times cheaper
        # than the match. Paths are unbounded (ids in them), so it starts over when full.
        self.seen: dict[str, str] = {}

    @classmethod
    def from_settings(cls, limits: LimitSettings, usage: UsageSettings) -> RouteTemplates:
        return cls([*(route.path for route in limits.routes), *limits.ai_paths, *usage.routes])

    def template(self, path: str) -> str:
        template = self.seen.get(path)
        if template is None:
            match = self._regex.match(path) if self._regex is not None else None
            template = OTHER if match is None or match.lastgroup is None else self.globs[int(match.lastgroup[1:])]
            if len(path) <= SEEN_PATH_LENGTH:  # 4096 paths of 16 kB (the header limit) would be 64 MB
                if len(self.seen) >= SEEN_PATHS:
                    self.seen.clear()
                self.seen[path] = template
        return template

    def under(self, patterns: Iterable[str]) -> list[str]:
        """The templates whose own text matches one of ``patterns`` (globs): the AI templates, for
        ``limits.ai_paths``. Exact for templates without wildcards, an estimate for the others."""
        regexes = [re.compile(translate(pattern)) for pattern in patterns]
        return [glob for glob in self.globs if any(regex.match(glob) for regex in regexes)]


def new_row(tier: str, owner: str) -> Row:
    return [0, 0, 0.0, 0.0, *([0] * (len(LATENCY_BUCKETS_MS) + 1)), tier, owner]


def add_row(into: Row, row: Row) -> None:
    """Fold ``row`` into ``into`` (same key); the later tier and owner win, as in the database."""
    into[CALLS] += row[CALLS]
    into[REFUSED] += row[REFUSED]
    into[LATENCY_SUM] += row[LATENCY_SUM]
    into[LATENCY_MAX] = max(into[LATENCY_MAX], row[LATENCY_MAX])
    for i in range(FIRST_BUCKET, TIER):
        into[i] += row[i]
    into[TIER], into[OWNER] = row[TIER], row[OWNER]


def column_values(key: Key, row: Row) -> dict[str, Any]:
    """One row of ``api_usage_rollups``: buckets made cumulative, text cut to the column sizes (an owner
    may be longer than the column; a value the database refuses would fail its whole batch)."""
    minute, key_id, route, status = key
    values: dict[str, Any] = {
        "minute": EPOCH + timedelta(seconds=minute),
        "key_id": key_id[: MAX_LENGTHS["key_id"]],
        "route": route[: MAX_LENGTHS["route"]],
        "status_class": status,
        "tier": row[TIER][: MAX_LENGTHS["tier"]],
        "owner": row[OWNER][: MAX_LENGTHS["owner"]],
        "calls": row[CALLS],
        "refused": row[REFUSED],
        "latency_sum_ms": round(row[LATENCY_SUM], 3),
        "latency_max_ms": round(min(row[LATENCY_MAX], MAX_LATENCY_MS), 3),
    }
    cumulative = 0
    for i, column in enumerate(BUCKET_COLUMNS):
        cumulative += row[FIRST_BUCKET + i]
        values[column] = cumulative
    return values


def upsert_statement(dialect: str) -> sqlalchemy.Insert:
    """An INSERT that adds to the row already there (same minute, key, route and status class): counts
    and sums added, the larger maximum kept, tier and owner from the newer write.

    Executed with a list of rows, SQLAlchemy's "insertmanyvalues" sends it as one multi-row INSERT per
    ``insertmanyvalues_page_size`` rows, on SQLite and PostgreSQL alike; it does so for statements with
    RETURNING, hence the one returned column. Compiled once and cached: a ``.values(rows)`` statement
    is compiled anew for each batch, milliseconds of CPU per row (measured on the 2-core development
    machine), which the request threads would wait for (the GIL)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(api_usage_rollups)
    new, old = statement.excluded, api_usage_rollups.c
    added = ("calls", "refused", "latency_sum_ms", *BUCKET_COLUMNS)
    changes: dict[str, Any] = {name: old[name] + new[name] for name in added}
    larger = case((new.latency_max_ms > old.latency_max_ms, new.latency_max_ms), else_=old.latency_max_ms)
    changes["latency_max_ms"] = larger
    changes["tier"], changes["owner"] = new.tier, new.owner
    upsert = statement.on_conflict_do_update(index_elements=list(KEY_COLUMNS), set_=changes)
    return upsert.returning(old.calls)


def writer_engine(url: str, timeout_seconds: float, batch_rows: int) -> Engine:
    """An engine whose every wait ends after ``timeout_seconds``: the connect, a locked SQLite file, a
    PostgreSQL statement or lock. ``batch_rows`` rows to an INSERT statement.

    PostgreSQL: one pooled connection (one writer thread), checked before use. SQLite:
    - the file must exist: the proxy adds its table to the platform database, it never makes a new empty
      one (a mistyped path, or a flush before the platform's own tables exist, would);
    - a connection per flush, not kept: a platform database replaced by a new file (the demo's generator
      renames one into place) is the one written next, not the unlinked old one;
    - transactions begin IMMEDIATE, taking the write lock first: two writers that both began by reading (a
      deferred BEGIN) could not both upgrade, and SQLite fails one at once instead of letting it wait."""
    parsed = sqlalchemy.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            parsed = parsed.set(database=f"file:{database}", query={**parsed.query, "mode": "rw", "uri": "true"})
        connect_args: dict[str, Any] = {"timeout": timeout_seconds, "check_same_thread": False, "isolation_level": None}
        engine = sqlalchemy.create_engine(
            parsed, connect_args=connect_args, poolclass=NullPool, insertmanyvalues_page_size=batch_rows
        )
        event.listen(engine, "begin", _begin_immediate)
        return engine
    milliseconds = max(1, int(timeout_seconds * 1000))
    connect_args = {
        "connect_timeout": max(1, round(timeout_seconds)),
        "options": f"-c statement_timeout={milliseconds} -c lock_timeout={milliseconds}",
    }
    return sqlalchemy.create_engine(
        parsed,
        connect_args=connect_args,
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=True,
        insertmanyvalues_page_size=batch_rows,
    )


def _begin_immediate(connection: sqlalchemy.Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class RollupWriter:
    """Writes rows to ``api_usage_rollups`` (creating the table when it is missing)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._statement = upsert_statement(engine.dialect.name)
        self._table_checked = False

    def write(self, rows: Mapping[Key, Row]) -> int:
        """Add ``rows`` in one transaction, one statement per batch; the number of rows written."""
        if not rows:
            return 0
        self.ensure_table()
        ordered = sorted(rows.items())  # the primary key's order: no deadlock between writers
        with self.engine.begin() as connection:
            connection.execute(self._statement, [column_values(key, row) for key, row in ordered])
        return len(ordered)

    def ensure_table(self) -> None:
        """Create the table (and its index) unless it is there. Every worker of every replica tries at its
        first flush: the one that loses the race (PostgreSQL: a duplicate in pg_type) finds it made."""
        if self._table_checked:
            return
        try:
            with self.engine.begin() as connection:
                api_usage_rollups.create(connection, checkfirst=True)
        except sqlalchemy.exc.DBAPIError:
            with self.engine.connect() as connection:
                if not sqlalchemy.inspect(connection).has_table(api_usage_rollups.name):
                    raise
        self._table_checked = True

    def forget_table(self) -> None:
        """Check for the table again before the next write (after an error: it may have been dropped)."""
        self._table_checked = False


class UsageRollups:
    """The rollups of one worker process: ``record`` per request, ``flush`` from the writer thread."""

    def __init__(
        self,
        settings: UsageSettings,
        routes: RouteTemplates,
        metrics: ProxyMetrics,
        writer: RollupWriter | None = None,
    ) -> None:
        self.settings = settings
        self.routes = routes
        self.metrics = metrics
        self.writer = writer or RollupWriter(
            writer_engine(settings.database_url, settings.timeout_seconds, settings.batch_rows)
        )
        self._max_rows = settings.max_rows
        self._lock = threading.Lock()
        self._rows: dict[Key, Row] = {}
        self._dropped = 0  # calls dropped since the last flush (counted into the metric by the writer)
        self._pending: dict[Key, Row] = {}  # taken from the buffer, not written yet: the writer's alone
        self._held = 0  # len(_pending), as request threads see it
        self._flush_lock = threading.Lock()
        self._failing = False  # the last flush found the database unavailable
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finalizer: Finalize | None = None
        self._wall_offset = 0.0
        self._set_wall_offset()

    def _set_wall_offset(self) -> None:
        """Wall-clock time minus ``perf_counter``, read again at every flush so the wall clock's steps
        (NTP) reach the minutes within ``flush_seconds``."""
        self._wall_offset = time.time() - time.perf_counter()

    def record(
        self,
        key_id: str,
        tier: str,
        owner: str,
        path: str,
        status: int,
        latency_ms: float,
        refused: bool,
        started: float | None = None,
    ) -> None:
        """Count one call (the request path: no I/O, never waits for the writer). ``started``: the
        ``time.perf_counter()`` at which the call began, which the gateway has: its minute is read from it,
        saving a clock read (on some virtual machines a system call)."""
        moment = (time.perf_counter() if started is None else started) + self._wall_offset
        routes = self.routes
        template = routes.seen.get(path) or routes.template(path)  # the lookup inline: a call less
        key = (int(moment) // 60 * 60, key_id, template, _STATUS_CLASS_OF[status] if 0 <= status < 1000 else "5xx")
        lock = self._lock
        lock.acquire()
        try:
            row = self._rows.get(key)
            if row is None:
                if len(self._rows) + self._held >= self._max_rows:
                    self._dropped += 1
                    return
                row = self._rows[key] = new_row(tier, owner)
            row[CALLS] += 1
            if refused:
                row[REFUSED] += 1
            row[LATENCY_SUM] += latency_ms
            if latency_ms > row[LATENCY_MAX]:
                row[LATENCY_MAX] = latency_ms
            row[FIRST_BUCKET + bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
        finally:
            lock.release()

    def start(self) -> None:
        """Start the writer thread, and flush at process exit."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="usage-rollups", daemon=True)
        self._thread.start()
        self._finalizer = Finalize(None, self.close, exitpriority=10)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.flush_seconds):
            self.flush()
        # The last flush, retried for up to timeout_seconds: at shutdown every worker writes at once.
        deadline = time.monotonic() + self.settings.timeout_seconds
        self.flush()
        while self.buffered_rows and time.monotonic() < deadline:
            time.sleep(0.1)
            self.flush()

    def close(self) -> None:
        """Stop the writer after a last flush, waiting for it at most ``SHUTDOWN_WAIT_SECONDS``."""
        if self._finalizer is not None:
            self._finalizer.cancel()  # closed once: here, or by the finalizer at exit
        self._stop.set()
        if self._thread is None:
            self.flush()
            return
        self._thread.join(SHUTDOWN_WAIT_SECONDS)
        if self._thread.is_alive():
            log.error("usage rollups: the last flush did not finish in time; %d rows lost", self.buffered_rows)
        self.writer.engine.dispose()

    @property
    def buffered_rows(self) -> int:
        """Distinct rows held now: buffered and not yet written."""
        return len(self._rows) + self._held

    def _take(self) -> int:
        """Move the buffer into the rows not written yet; the calls dropped since the last take."""
        with self._lock:
            rows, self._rows = self._rows, {}
            dropped, self._dropped = self._dropped, 0
            self._held = len(self._pending) + len(rows)  # an upper bound until the fold below is done
        for key, row in rows.items():
            held = self._pending.get(key)
            if held is None:
                self._pending[key] = row
            else:
                add_row(held, row)
        self._held = len(self._pending)
        return dropped

    def flush(self) -> None:
        """Write every row held; keep them when the database cannot take them now."""
        with self._flush_lock:
            self._set_wall_offset()
            metrics = self.metrics
            dropped = self._take()
            if dropped:
                metrics.usage_dropped.inc(dropped)
            if self._pending:
                started = time.perf_counter()
                try:
                    written = self.writer.write(self._pending)
                except TRANSIENT_ERRORS as exc:
                    self.writer.forget_table()
                    metrics.usage_flushes.labels("error").inc()
                    # Once per outage at warning level, not every flush_seconds.
                    level = logging.DEBUG if self._failing else logging.WARNING
                    log.log(level, "usage rollups: database unavailable, keeping %d rows: %s", len(self._pending), exc)
                    self._failing = True
                except Exception:
                    self.writer.forget_table()
                    calls = sum(row[CALLS] for row in self._pending.values())
                    metrics.usage_flushes.labels("error").inc()
                    metrics.usage_dropped.inc(calls)
                    log.exception(
                        "usage rollups: the database refused %d rows (%d calls), dropped", len(self._pending), calls
                    )
                    self._pending.clear()
                else:
                    metrics.usage_flushes.labels("ok").inc()
                    metrics.usage_rows_written.inc(written)
                    self._pending.clear()
                    if self._failing:
                        log.warning("usage rollups: database back, %d rows written", written)
                        self._failing = False
                metrics.usage_flush_seconds.observe(time.perf_counter() - started)
                self._held = len(self._pending)
            metrics.usage_buffered_rows.set(self.buffered_rows)
