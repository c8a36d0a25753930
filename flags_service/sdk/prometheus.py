"""Prometheus metrics of a ``FlagsClient`` in the app's own process (optional: needs prometheus-client).

``FlagsClientCollector(client, registry)`` reads the client at scrape time, so evaluation pays nothing for
it. Labels come from fixed sets only: ``served`` is ``default`` or ``last_known_good``, ``status`` one of
the client's three statuses. In a service-kit app pass ``registry=None`` to
``metrics.add_scrape_collector``; under several granian workers a scrape then shows the client of the worker
that answers it (each worker has its own client), not a sum.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flags_service.sdk.client import NOT_READY, READY, STALE, FlagsClient

UNREADY = "flags_client_unready_evaluations"
UNREADY_HELP = (
    "Evaluations before the client's first snapshot from the flag service, by what they served: the "
    "caller's default or the last-known-good copy from disk."
)
STATUS = "flags_client_status"
STATUS_HELP = "The flags client's status, one-hot: ready, stale (serving its last snapshot) or not_ready (none)."


class FlagsClientCollector(Collector):
    """``flags_client_unready_evaluations_total{served}`` and ``flags_client_status{status}``."""

    def __init__(self, client: FlagsClient, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.client = client
        if registry is not None:
            registry.register(self)

    def describe(self) -> Iterable[Metric]:
        yield CounterMetricFamily(UNREADY, UNREADY_HELP, labels=["served"])
        yield GaugeMetricFamily(STATUS, STATUS_HELP, labels=["status"])

    def collect(self) -> Iterable[Metric]:
        unready = CounterMetricFamily(UNREADY, UNREADY_HELP, labels=["served"])
        for served, count in sorted(self.client.unready_evaluations.items()):
            unready.add_metric([served], count)
        yield unready
        status = GaugeMetricFamily(STATUS, STATUS_HELP, labels=["status"])
        current = self.client.status
        for name in (READY, STALE, NOT_READY):
            status.add_metric([name.lower()], 1.0 if name == current else 0.0)
        yield status
