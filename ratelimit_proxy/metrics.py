"""The proxy's metrics (names fixed in docs/conventions.md). Labels come from fixed sets only: tiers
from the tier file, decisions, status classes, window names, rule names."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ratelimit_proxy.limiter_storage import StorageUnavailable

DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "ratelimit_requests_total",
            "Requests through the proxy by tier, limiter decision and response status class.",
            ["tier", "decision", "status_class"],
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "ratelimit_decision_duration_seconds",
            "Time to decide one request (the limiter script round trip).",
            buckets=DECISION_BUCKETS,
            registry=registry,
        )
        self.upstream_seconds = Histogram(
            "ratelimit_upstream_duration_seconds",
            "Time until the upstream's response headers arrived.",
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )
        self.blocked = Counter(
            "ratelimit_blocked_requests_total",
            "Requests refused before the limiter: ban, deny-list, attack path, unknown key, bad request.",
            ["reason"],
            registry=registry,
        )
        self.bans = Counter(
            "ratelimit_bans_total", "Bans issued, by source (auto, manual).", ["source"], registry=registry
        )
        self.detections = Counter(
            "ratelimit_abuse_detections_total",
            "Abuse rules that matched, by rule and mode (enforce, shadow).",
            ["rule", "mode"],
            registry=registry,
        )
        self.near_limit = Counter(
            "ratelimit_near_limit_total",
            "Admitted requests that left a window at 80% or more of its quota.",
            ["tier", "window"],
            registry=registry,
        )
        self.local_refusals = Counter(
            "ratelimit_local_refusals_total",
            "429s answered from the over-limit cache, without a Redis call (also in ratelimit_requests_total).",
            registry=registry,
        )
        self.leased = Counter(
            "ratelimit_leased_total",
            "Requests admitted from a lease of the client's budget, without a Redis call (also in "
            "ratelimit_requests_total).",
            registry=registry,
        )
        self.redis_errors = Counter(
            "ratelimit_redis_errors_total", "Failed or skipped Redis calls on the request path.", registry=registry
        )
        self.circuit_open = Gauge(
            "ratelimit_circuit_open",
            "1 while the Redis circuit breaker is open (the highest over worker processes).",
            registry=registry,
            multiprocess_mode="max",
        )
        # Usage rollups (ratelimit_proxy/usage.py): how the writing goes, never who called (per-customer
        # figures are in the api_usage_rollups table, not in labels).
        self.usage_flushes = Counter(
            "usage_rollup_flushes_total",
            "Flushes of the usage rollups that had rows to write, by result (ok, error).",
            ["result"],
            registry=registry,
        )
        self.usage_rows_written = Counter(
            "usage_rollup_rows_written_total",
            "Rollup rows upserted into api_usage_rollups (one per key, minute, route and status class a flush).",
            registry=registry,
        )
        self.usage_dropped = Counter(
            "usage_rollup_dropped_total",
            "Calls left out of the usage rollups: the buffer was full (usage.max_rows) or the database refused them.",
            registry=registry,
        )
        self.usage_flush_seconds = Histogram(
            "usage_rollup_flush_duration_seconds",
            "Time to write one flush of usage rollups, failed ones included.",
            buckets=FLUSH_BUCKETS,
            registry=registry,
        )
        self.usage_buffered_rows = Gauge(
            "usage_rollup_buffered_rows",
            "Rollup rows held in memory after the last flush, not yet written (summed over worker processes).",
            registry=registry,
            multiprocess_mode="livesum",
        )


class ActiveBansCollector(Collector):
    """``ratelimit_active_bans`` read from the shared ban store at scrape time (right under any number of
    workers and replicas). While the store is down the sample is left out (unknown, not 0), and the rest
    of the scrape, ``ratelimit_circuit_open`` above all, still answers."""

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("ratelimit_active_bans", "Bans in force now.")

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("ratelimit_active_bans", "Bans in force now.")
        with contextlib.suppress(StorageUnavailable):
            family.add_metric([], self._count())
        yield family
