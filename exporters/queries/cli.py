"""`vibelux-exporter-queries serve`: pg_stat_statements as bounded top-K series, and index suggestions."""

from __future__ import annotations

from exporters.database import read_only_engine
from exporters.queries.exporter import QueryInsightsExporter
from exporters.queries.settings import ENV_PREFIX, QueriesSettings
from exporters.serving import Exporter, exporter_cli
from service_kit.index import ServiceDocs

DOCS = ServiceDocs(
    "Query insights exporter",
    "The PostgreSQL server's statements (pg_stat_statements) as bounded top-K series, and index suggestions"
    " the planner confirms (hypopg).",
    "Query insights (exporters/queries, :9105) and the statement timer (service_kit/statements.py)",
)


def build(settings: QueriesSettings) -> Exporter:
    engine = read_only_engine(settings.database.url, settings.statements.timeout_seconds)
    exporter = QueryInsightsExporter(engine, settings)
    return Exporter(exporter.registry, exporter.start, exporter.stop, exporter.book.ready)


main = exporter_cli("queries", QueriesSettings, ENV_PREFIX, build, DOCS)

if __name__ == "__main__":
    main()
