"""`vibelux-exporter-health serve`: probe the platform's dependencies on their schedules, serve the results."""

from __future__ import annotations

from exporters.health.exporter import HealthExporter
from exporters.health.settings import ENV_PREFIX, HealthSettings
from exporters.serving import Exporter, exporter_cli
from service_kit.index import ServiceDocs

DOCS = ServiceDocs(
    "Service-health exporter",
    "Probes of the API, database, Redis and providers on their schedules: up, status, latency per service.",
    "Service-health exporter (exporters/health, :9102)",
    "services.md",
)


def build(settings: HealthSettings) -> Exporter:
    exporter = HealthExporter(settings.probes)
    return Exporter(exporter.registry, exporter.start, exporter.stop, exporter.book.complete)


main = exporter_cli("health", HealthSettings, ENV_PREFIX, build, DOCS)


if __name__ == "__main__":
    main()
