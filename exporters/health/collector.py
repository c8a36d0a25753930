"""The last probe result per service, and the collector that publishes it on every scrape.

Scrapes only read this book under a lock: they never wait for a probe.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporters.health.probes import OUTCOMES, STATUSES, ProbeReport, grade
from exporters.scheduling import Attempt


@dataclass
class ServiceHealth:
    """What is known of one service: the last graded attempt and the running totals."""

    status: str | None = None  # None until the first probe finished
    duration_seconds: float = 0.0
    last_success_at: float | None = None
    results: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))


class HealthBook:
    """Records graded probe attempts per service; thread-safe; read by the collector."""

    def __init__(self, services: Sequence[str]) -> None:
        self._lock = threading.Lock()
        self._services = {service: ServiceHealth() for service in services}

    def record(self, service: str, attempt: Attempt[ProbeReport], degraded_after_seconds: float | None) -> str:
        """Grade the attempt, update the service's entry, return its status."""
        status, outcome = grade(attempt, degraded_after_seconds)
        with self._lock:
            health = self._services[service]
            health.status = status
            health.duration_seconds = attempt.duration_seconds
            health.results[outcome] += 1
            if status != "down":
                health.last_success_at = attempt.finished_at
        return status

    def complete(self) -> bool:
        """Every service has been probed at least once."""
        with self._lock:
            return all(health.status is not None for health in self._services.values())

    def snapshot(self) -> dict[str, ServiceHealth]:
        with self._lock:
            return {
                service: ServiceHealth(h.status, h.duration_seconds, h.last_success_at, dict(h.results))
                for service, h in self._services.items()
            }


class HealthCollector(Collector):
    """service_up, service_status, service_probe_duration_seconds, service_probe_results_total,
    service_last_success_timestamp_seconds, from the book's last results."""

    def __init__(self, book: HealthBook) -> None:
        self._book = book

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "service_up",
            "1 if the service answered its last probe (healthy or degraded).",
            labels=["service"],
        )
        status = GaugeMetricFamily(
            "service_status",
            "Status of the service from its last probe (one-hot).",
            labels=["service", "status"],
        )
        duration = GaugeMetricFamily(
            "service_probe_duration_seconds", "Duration of the last probe in seconds.", labels=["service"]
        )
        results = CounterMetricFamily(
            "service_probe_results_total", "Probe results by outcome.", labels=["service", "outcome"]
        )
        last_success = GaugeMetricFamily(
            "service_last_success_timestamp_seconds",
            "Unix time of the last answered probe (healthy or degraded).",
            labels=["service"],
        )
        for service, health in sorted(self._book.snapshot().items()):
            for outcome in OUTCOMES:
                results.add_metric([service, outcome], health.results[outcome])
            if health.last_success_at is not None:
                last_success.add_metric([service], health.last_success_at)
            if health.status is None:  # not probed yet: no claim either way
                continue
            up.add_metric([service], 0.0 if health.status == "down" else 1.0)
            for name in STATUSES:
                status.add_metric([service, name], 1.0 if health.status == name else 0.0)
            duration.add_metric([service], health.duration_seconds)
        yield from (up, status, duration, results, last_success)
