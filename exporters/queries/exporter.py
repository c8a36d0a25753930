"""The query exporter: two periodic tasks against one PostgreSQL, and the collector serving their results.

- ``statements`` (every ``statements.interval_seconds``): one read of pg_stat_statements, booked by the pure
  :class:`~exporters.queries.topk.TopK` into at most K+1 series per metric.
- ``suggestions`` (every ``suggestions.interval_seconds``, when hypopg is installed): planner-confirmed
  index suggestions, the best ``suggestions.limit`` of them.

A scrape never touches the database (as in the business exporter): it serves the book. A missing extension
is not an error: ``pg_insights_extension_available{extension}`` says 0 and that task's metrics are absent,
so the official postgres image (no hypopg) serves statements and no suggestions, without an error storm.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from exporters.database import statement_deadline
from exporters.queries.postgres import StatementsRead, installed_extensions, read_statements
from exporters.queries.settings import QueriesSettings
from exporters.queries.suggestions import Suggestion, best_suggestions, suggest
from exporters.queries.topk import Counters, Series, TopK
from exporters.scheduling import Attempt, JobSet, PeriodicJob

EXTENSIONS = ("pg_stat_statements", "hypopg")
TASKS = ("statements", "suggestions")
STATEMENT_LABELS = ["fingerprint", "statement_type"]
# metric name, help, the Counters field it exports
STATEMENT_COUNTERS = (
    ("pg_statement_calls_total", "Calls of the statement (top K by execution time, else other).", "calls"),
    ("pg_statement_exec_seconds_total", "Time spent executing the statement.", "exec_seconds"),
    ("pg_statement_rows_total", "Rows the statement returned or changed.", "rows"),
    ("pg_statement_shared_blocks_hit_total", "Shared-buffer blocks found in the cache.", "shared_blocks_hit"),
    ("pg_statement_shared_blocks_read_total", "Shared-buffer blocks read from disk or the OS.", "shared_blocks_read"),
)


@dataclass
class TaskState:
    errors: int = 0
    duration_seconds: float | None = None
    last_success_at: float | None = None


@dataclass
class InsightsBook:
    """What the tasks found, read by scrapes under one lock."""

    topk: TopK
    lock: threading.Lock = field(default_factory=threading.Lock)
    extensions: dict[str, bool] = field(default_factory=dict)
    entries: int | None = None
    deallocations: int | None = None
    suggestions: list[Suggestion] = field(default_factory=list)
    tasks: dict[str, TaskState] = field(default_factory=lambda: {task: TaskState() for task in TASKS})

    def record(self, task: str, attempt: Attempt[object]) -> None:
        with self.lock:
            state = self.tasks[task]
            state.duration_seconds = attempt.duration_seconds
            if attempt.error is None:
                state.last_success_at = attempt.finished_at
            else:
                state.errors += 1

    def observe_statements(self, read: StatementsRead | None, extensions: set[str]) -> None:
        with self.lock:
            self.extensions = {name: name in extensions for name in EXTENSIONS}
            if read is None:
                self.entries = self.deallocations = None
                return
            self.entries, self.deallocations = len(read.snapshot.entries), read.deallocations
            self.topk.observe(read.snapshot)

    def ready(self) -> bool:
        with self.lock:
            return self.tasks["statements"].duration_seconds is not None


class InsightsCollector(Collector):
    def __init__(self, book: InsightsBook) -> None:
        self.book = book

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        with self.book.lock:
            series = [Series(s.fingerprint, s.statement_type, s.query, s.totals)
                      for s in self.book.topk.series()]  # fmt: skip
            have_statements = self.book.entries is not None
            yield from self._status()
            suggestions = list(self.book.suggestions)
        if have_statements:
            yield from statement_families(series)
        yield from suggestion_families(suggestions)

    def _status(self) -> Iterator[Metric]:
        book = self.book
        available = GaugeMetricFamily(
            "pg_insights_extension_available",
            "1: the extension is installed in the watched database (hypopg: index suggestions).",
            labels=["extension"],
        )
        for name in EXTENSIONS:
            if name in book.extensions:
                available.add_metric([name], 1.0 if book.extensions[name] else 0.0)
        yield available
        if book.entries is not None:
            yield GaugeMetricFamily(
                "pg_statements_entries", "Entries pg_stat_statements holds for the watched databases.", book.entries
            )
            yield CounterMetricFamily(
                "pg_statements_deallocations_total",
                "Entries pg_stat_statements evicted at pg_stat_statements.max since its last reset.",
                book.deallocations,
            )
        errors = CounterMetricFamily("pg_insights_task_errors_total", "Failed or timed-out runs.", labels=["task"])
        duration = GaugeMetricFamily("pg_insights_task_duration_seconds", "The last run's duration.", labels=["task"])
        success = GaugeMetricFamily(
            "pg_insights_task_last_success_timestamp_seconds", "Unix time of the last good run.", labels=["task"]
        )
        for task, state in book.tasks.items():
            errors.add_metric([task], state.errors)
            if state.duration_seconds is not None:
                duration.add_metric([task], state.duration_seconds)
            if state.last_success_at is not None:
                success.add_metric([task], state.last_success_at)
        yield from (errors, duration, success)


def statement_families(series: list[Series]) -> Iterator[Metric]:
    """The K+1 series of each counter, and the query text of the K members."""
    for name, help_text, attribute in STATEMENT_COUNTERS:
        family = CounterMetricFamily(name, help_text, labels=STATEMENT_LABELS)
        for one in series:
            family.add_metric([one.fingerprint, one.statement_type], _value(one.totals, attribute))
        yield family
    info = GaugeMetricFamily(
        "pg_statement_info", "The statement's normalised text (truncated), for the top K; always 1.",
        labels=[*STATEMENT_LABELS, "query"],
    )  # fmt: skip
    for one in series:
        if one.query:
            info.add_metric([one.fingerprint, one.statement_type, one.query], 1.0)
    yield info


def suggestion_families(suggestions: list[Suggestion]) -> Iterator[Metric]:
    reduction = GaugeMetricFamily(
        "pg_index_suggestion_cost_reduction_ratio",
        "CREATE INDEX ON table (column): how much the planner's cost of the query fell with it (hypopg).",
        labels=["table", "column", "fingerprint"],
    )
    for suggestion in suggestions:
        reduction.add_metric([suggestion.table, suggestion.column, suggestion.fingerprint], suggestion.cost_reduction)
    yield reduction


def _value(counters: Counters, attribute: str) -> float:
    return float(getattr(counters, attribute))


class QueryInsightsExporter(JobSet):
    """The statements task and (when enabled) the suggestions task, sharing one book."""

    def __init__(self, engine: Engine, settings: QueriesSettings, registry: CollectorRegistry | None = None) -> None:
        self.engine = engine
        self.settings = settings
        statements = settings.statements
        decay = 0.5 ** (statements.interval_seconds / statements.ranking_half_life_seconds)
        self.book = InsightsBook(TopK(statements.top_k, decay=decay, query_chars=statements.query_chars))
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(InsightsCollector(self.book))
        jobs: dict[str, PeriodicJob[object]] = {
            "statements": PeriodicJob(
                "queries-statements",
                self.read_statements,
                lambda attempt: self.book.record("statements", attempt),
                statements.interval_seconds,
                statements.timeout_seconds,
            )
        }
        if settings.suggestions.enabled:
            jobs["suggestions"] = PeriodicJob(
                "queries-suggestions",
                self.find_suggestions,
                lambda attempt: self.book.record("suggestions", attempt),
                settings.suggestions.interval_seconds,
                settings.suggestions.timeout_seconds,
            )
        super().__init__(jobs)

    def read_statements(self) -> None:
        """One read booked into the top K (or, without the extension, its absence reported)."""
        deadline = self.settings.statements.timeout_seconds
        with self.engine.connect() as connection, connection.begin(), statement_deadline(connection, deadline):
            extensions = installed_extensions(connection)
            read = None
            if "pg_stat_statements" in extensions:
                read = read_statements(connection, self.settings.database.databases)
        self.book.observe_statements(read, extensions)

    def find_suggestions(self) -> None:
        """Confirmed suggestions, the best ``limit``; none (and no error) without hypopg."""
        settings = self.settings.suggestions
        with self.engine.connect() as connection:
            with connection.begin():
                extensions = installed_extensions(connection)
            found: list[Suggestion] = []
            if {"pg_stat_statements", "hypopg"} <= extensions:
                found = best_suggestions(suggest(connection, settings), settings.limit)
        with self.book.lock:
            self.book.suggestions = found
