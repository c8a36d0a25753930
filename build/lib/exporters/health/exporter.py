"""Wires probes to their schedules, the book and a registry: the whole health exporter minus its CLI."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from exporters.health.collector import HealthBook, HealthCollector
from exporters.health.probes import ProbeReport, ProbeSpec, build_probe
from exporters.scheduling import Attempt, JobSet, PeriodicJob


class HealthExporter(JobSet):
    """One PeriodicJob per probe, all recording into one HealthBook published by one collector."""

    def __init__(self, probes: Mapping[str, ProbeSpec], registry: CollectorRegistry | None = None) -> None:
        self.book = HealthBook(list(probes))
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(HealthCollector(self.book))
        super().__init__({service: self._job(service, spec) for service, spec in probes.items()})

    def _job(self, service: str, spec: ProbeSpec) -> PeriodicJob[ProbeReport]:
        def record(attempt: Attempt[ProbeReport]) -> None:
            self.book.record(service, attempt, spec.degraded_after_seconds)

        return PeriodicJob(f"probe-{service}", build_probe(spec), record, spec.interval_seconds, spec.timeout_seconds)
