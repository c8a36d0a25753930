"""Cached query results, the collector serving them, and the exporter running the queries on schedule.

A scrape never touches the database: it publishes the last successful result of each query. A query that
fails or times out drops its own samples (they go stale in Prometheus instead of repeating old numbers),
increments `business_query_errors_total{query}`, and leaves every other query alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from exporters.business.analytics import metric_specs, runner
from exporters.business.queries import QuerySpec, Sample
from exporters.scheduling import Attempt, JobSet, PeriodicJob


@dataclass
class QueryState:
    samples: list[Sample] | None = None  # None: no successful result to serve (yet, or since the last failure)
    errors: int = 0
    duration_seconds: float | None = None
    last_success_at: float | None = None


class ResultBook:
    """The last outcome of each named query; written by the query jobs, read by scrapes."""

    def __init__(self, queries: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._queries = {name: QueryState() for name in queries}

    def record(self, query: str, attempt: Attempt[list[Sample]]) -> None:
        with self._lock:
            state = self._queries[query]
            state.duration_seconds = attempt.duration_seconds
            if attempt.error is None and attempt.value is not None:
                state.samples = attempt.value
                state.last_success_at = attempt.finished_at
            else:
                state.samples = None
                state.errors += 1

    def complete(self) -> bool:
        """Every query has run at least once (successfully or not)."""
        with self._lock:
            return all(state.duration_seconds is not None for state in self._queries.values())

    def snapshot(self) -> dict[str, QueryState]:
        with self._lock:
            return {name: QueryState(s.samples, s.errors, s.duration_seconds, s.last_success_at)
                    for name, s in self._queries.items()}  # fmt: skip


class BusinessCollector(Collector):
    """The queries' metrics (gauges) plus per-query errors, duration and last success."""

    def __init__(self, queries: Mapping[str, QuerySpec], book: ResultBook) -> None:
        self._queries = dict(queries)
        self._book = book

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        states = self._book.snapshot()
        for query, spec in self._queries.items():
            samples = states[query].samples or []
            for metric, metric_spec in metric_specs(spec).items():
                family = GaugeMetricFamily(
                    metric, metric_spec.help or f"From query {query}.", labels=list(metric_spec.labels)
                )
                for name, labels, value in samples:
                    if name == metric:
                        family.add_metric(list(labels), value)
                yield family
        errors = CounterMetricFamily(
            "business_query_errors_total", "Failed or timed-out runs of the query.", labels=["query"]
        )
        duration = GaugeMetricFamily(
            "business_query_duration_seconds", "Duration of the query's last run in seconds.", labels=["query"]
        )
        last_success = GaugeMetricFamily(
            "business_query_last_success_timestamp_seconds",
            "Unix time of the query's last successful run.",
            labels=["query"],
        )
        for query, state in states.items():
            errors.add_metric([query], state.errors)
            if state.duration_seconds is not None:
                duration.add_metric([query], state.duration_seconds)
            if state.last_success_at is not None:
                last_success.add_metric([query], state.last_success_at)
        yield from (errors, duration, last_success)


class BusinessExporter(JobSet):
    """One PeriodicJob per query against one engine; results in a ResultBook served by BusinessCollector."""

    def __init__(
        self, engine: Engine, queries: Mapping[str, QuerySpec], registry: CollectorRegistry | None = None
    ) -> None:
        self.book = ResultBook(queries)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(BusinessCollector(queries, self.book))
        super().__init__({name: self._job(engine, name, spec) for name, spec in queries.items()})

    def _job(self, engine: Engine, name: str, spec: QuerySpec) -> PeriodicJob[list[Sample]]:
        def record(attempt: Attempt[list[Sample]]) -> None:
            self.book.record(name, attempt)

        return PeriodicJob(f"query-{name}", runner(engine, spec), record, spec.interval_seconds, spec.timeout_seconds)
