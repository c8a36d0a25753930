"""The flag service's own metrics (names in docs/conventions.md) and the evaluation recorder.

Evaluation counts arrive in bulk (OFREP requests, SDK batches), so they are summed in process and flushed
every few seconds to the Prometheus counter and to the database (which stale-flag detection reads);
label values are only known flag keys and their variants, so cardinality is the managed set of flags.
"""

from __future__ import annotations

import atexit
import collections
import logging
import threading
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("flags_service.metrics")

CHANGE_ACTIONS = ("create", "update", "toggle", "rollout", "rollback", "delete", "segment")
POLL_RESULTS = ("updated", "not_modified", "stream")
INVALID_CONTEXT_REASONS = ("unknown_tier", "malformed")  # the label's whole set


class FlagMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.evaluations = Counter(
            "flags_evaluations_total",
            "Flag evaluations reported by OFREP and SDKs, by environment, flag and variant.",
            ["environment", "flag", "variant"],
            registry=registry,
        )
        self.sdk_polls = Counter(
            "flags_sdk_polls_total",
            "SDK snapshot requests: updated (200), not_modified (304) or stream (SSE connect).",
            ["environment", "result"],
            registry=registry,
        )
        self.changes = Counter(
            "flags_changes_total",
            "Flag and segment changes, by environment served and action.",
            ["environment", "action"],
            registry=registry,
        )
        self.invalid_contexts = Counter(
            "flags_invalid_context_total",
            "OFREP requests refused as INVALID_CONTEXT: unknown_tier (a tier outside service_kit.tiers) or "
            "malformed (context or targetingKey of the wrong type).",
            ["reason"],
            registry=registry,
        )
        for reason in INVALID_CONTEXT_REASONS:
            self.invalid_contexts.labels(reason)


class EnvironmentGaugeCollector(Collector):
    """A gauge per environment computed at scrape time from shared state (the database)."""

    def __init__(self, name: str, documentation: str, values: Callable[[], Mapping[str, float]]) -> None:
        self.name, self.documentation, self.values = name, documentation, values

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=["environment"])

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=["environment"])
        try:
            values = self.values()
        except Exception:
            log.exception("could not compute %s", self.name)
            return
        for environment, value in sorted(values.items()):
            family.add_metric([environment], value)
        yield family


class ScalarGaugeCollector(Collector):
    """One unlabelled gauge read at scrape time in the process that answers the scrape."""

    def __init__(self, name: str, documentation: str, value: Callable[[], float]) -> None:
        self.name, self.documentation, self.value = name, documentation, value

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, value=self.value())


Served = tuple[str, str]  # flag, variant


class EvaluationRecorder:
    """Sums evaluation counts and flushes them every ``interval`` seconds (and at exit)."""

    def __init__(
        self,
        metrics: FlagMetrics,
        persist: Callable[[str, Mapping[str, int]], None],
        interval: float,
    ) -> None:
        self.metrics = metrics
        self.persist = persist
        self.interval = interval
        self._counts: collections.defaultdict[str, collections.Counter[Served]] = self._empty()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add_served(self, environment: str, served: list[tuple[str, str]]) -> None:
        """One evaluation per ``(flag, variant)`` pair; Counter.update counts the list in C."""
        if served:
            with self._lock:
                self._counts[environment].update(served)
            if self._thread is None:
                self._start()

    def add_many(self, environment: str, counts: Mapping[tuple[str, str], int]) -> None:
        with self._lock:
            self._counts[environment].update(counts)
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="flags-evaluations", daemon=True)
                self._thread.start()
                atexit.register(self.flush)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    @staticmethod
    def _empty() -> collections.defaultdict[str, collections.Counter[Served]]:
        return collections.defaultdict(collections.Counter)

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, self._empty()
        for environment, served in counts.items():
            per_flag: collections.Counter[str] = collections.Counter()
            for (flag, variant), count in served.items():
                self.metrics.evaluations.labels(environment, flag, variant).inc(count)
                per_flag[flag] += count
            if not per_flag:
                continue
            try:
                self.persist(environment, per_flag)
            except Exception:
                log.exception("could not store evaluation statistics")

    def close(self) -> None:
        self._stop.set()
        self.flush()
