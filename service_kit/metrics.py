"""RED metrics for every request, labelled by route template, and the `/metrics` endpoint.

Under granian with several workers, prometheus-client runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR
set by ``service_kit.server`` before any worker starts): counters and histograms are summed over worker
files at scrape time. Gauges that describe shared state (database rows, Redis keys) are scrape-time
collectors instead, so every worker reports the same truth. With one process the app's own registry is
served directly.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from service_kit.server import STARTED_AT_VARIABLE

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def started_at() -> float:
    """When `serve` started this service (its workers, respawned ones too, share it), else now: the process."""
    return float(os.environ.get(STARTED_AT_VARIABLE) or time.time())


class BuildInfoCollector(Collector):
    def __init__(self, service: str, version: str) -> None:
        self.labels = {"service": service, "version": version, "python": platform.python_version()}

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "vibelux_build_info", "Build of the running service; always 1.", labels=list(self.labels)
        )
        family.add_metric(list(self.labels.values()), 1)
        yield family


class StartTimeCollector(Collector):
    """The service's start as a timestamp, so dashboards can mark deploys and restarts at the moment itself."""

    def __init__(self, service: str, started: float) -> None:
        self.service, self.started = service, started

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "vibelux_start_time_seconds",
            "When the service started (serve, before its workers), in seconds since the epoch.",
            labels=["service"],
        )
        family.add_metric([self.service], self.started)
        yield family


class Metrics:
    """Owns a service's registry; ``init_app`` adds the RED middleware and `/metrics`."""

    def __init__(self, service: str, version: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self._scrape_collectors: list[Collector] = []
        # Label children by (method, route, status): bounded, as each comes from a small fixed set.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests handled, by route template and status code.",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to produce the response headers, by route template.",
            ["service", "method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.add_scrape_collector(BuildInfoCollector(service, version))
        self.add_scrape_collector(StartTimeCollector(service, started_at()))

    def add_scrape_collector(self, collector: Collector) -> None:
        """A collector computed at scrape time from shared state; safe under several workers."""
        self._scrape_collectors.append(collector)
        if not multiprocess_enabled():
            self.registry.register(collector)

    def exposition_registry(self) -> CollectorRegistry:
        if not multiprocess_enabled():
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        for collector in self._scrape_collectors:
            registry.register(collector)
        return registry

    def render(self) -> bytes:
        return generate_latest(self.exposition_registry())

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # labels() takes a lock and builds tuples: a proxy's hot path notices
            children = (
                self.requests.labels(self.service, method, route, str(status)),
                self.duration.labels(self.service, method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def init_app(self, app: Flask) -> None:
        blueprint = Blueprint("service_kit_metrics", __name__)

        @blueprint.get("/metrics")
        def metrics() -> Response:
            return Response(self.render(), mimetype=CONTENT_TYPE_LATEST)

        app.register_blueprint(blueprint)


def route_template() -> str:
    """The matched URL rule (``/api/v1/tickets/<int:ticket_id>``), never the raw path."""
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED_ROUTE


def elapsed_seconds() -> float:
    return time.perf_counter() - g.get("request_started", time.perf_counter())
