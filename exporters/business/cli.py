"""`vibelux-exporter-business serve`: run the named queries on their schedules, serve the last results."""

from __future__ import annotations

from exporters.business.exporter import BusinessExporter
from exporters.business.settings import ENV_PREFIX, BusinessSettings
from exporters.database import read_only_engine
from exporters.serving import Exporter, exporter_cli
from service_kit.index import ServiceDocs

DOCS = ServiceDocs(
    "Business exporter",
    "Users, revenue, retention and usage from the platform database, by named queries on their schedules.",
    "Business exporter (exporters/business, :9103)",
    "business.md",
)


def build(settings: BusinessSettings) -> Exporter:
    timeout = max(spec.timeout_seconds for spec in settings.queries.values())
    exporter = BusinessExporter(read_only_engine(settings.database.url, timeout), settings.queries)
    return Exporter(exporter.registry, exporter.start, exporter.stop, exporter.book.complete)


main = exporter_cli("business", BusinessSettings, ENV_PREFIX, build, DOCS)

if __name__ == "__main__":
    main()
