"""Wires probes to their schedules, the book and a registry: the whole health exporter minus its CLI."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from exporters.health.collector import HealthBook, HealthCollector
from exporters.health.probes import ProbeReport, ProbeSpec, build_probe
from exporters.scheduling import Attempt, PeriodicJob


class HealthExporter:
    """One PeriodicJob per probe, all recording into one HealthBook published by one collector."""

    def __init__(self, specs: Sequence[ProbeSpec], registry: CollectorRegistry | None = None) -> None:
        services = [spec.service for spec in specs]
        duplicates = sorted({service for service in services if services.count(service) > 1})
        if duplicates:
            raise ValueError(f"services probed twice: {', '.join(duplicates)}")
        self.book = HealthBook(services)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(HealthCollector(self.book))
        self.jobs = {spec.service: self._job(spec) for spec in specs}

    def _job(self, spec: ProbeSpec) -> PeriodicJob[ProbeReport]:
        def record(attempt: Attempt[ProbeReport]) -> None:
            self.book.record(spec.service, attempt, spec.degraded_after_seconds)

        return PeriodicJob(
            f"probe-{spec.service}", build_probe(spec), record, spec.interval_seconds, spec.timeout_seconds
        )

    def start(self) -> None:
        for job in self.jobs.values():
            job.start()

    def stop(self) -> None:
        for job in self.jobs.values():
            job.request_stop()
        for job in self.jobs.values():
            job.stop()
