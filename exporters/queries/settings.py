"""The query exporter's settings: where to serve, which PostgreSQL, how many series, and suggestions.

```yaml
server: {host: 127.0.0.1, port: 9105}
database: {databases: [tickets, flags]}   # url from EXPORTER_QUERIES_DATABASE__URL only
statements: {interval_seconds: 30, top_k: 50}
suggestions: {enabled: true, interval_seconds: 300, limit: 10}
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from exporters.serving import ExporterServerSettings
from service_kit.config import ConfigError, checked, port_check, positive, ratio, secret

ENV_PREFIX = "EXPORTER_QUERIES"


def _between(low: int, high: int, what: str) -> Callable[[int], str | None]:
    return lambda value: None if low <= value <= high else f"between {low} and {high} {what}"


@dataclass(frozen=True)
class QueriesServerSettings(ExporterServerSettings):
    port: int = checked(9105, port_check)


@dataclass(frozen=True)
class QueriesDatabaseSettings:
    """The PostgreSQL server to watch, through one of its databases, where ``CREATE EXTENSION
    pg_stat_statements`` (and hypopg, for suggestions) was run. The URL can hold a password: environment
    only (EXPORTER_QUERIES_DATABASE__URL). ``databases``: whose statements to export (empty: every one)."""

    url: str = secret("")
    databases: list[str] = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class StatementsSettings:
    """Reads of pg_stat_statements: each read's deltas are booked into at most ``top_k`` + 1 series."""

    interval_seconds: float = checked(30.0, positive)
    timeout_seconds: float = checked(10.0, positive)
    top_k: int = checked(50, _between(1, 500, "series"))
    # how fast the ranking forgets: a query's execution time counts half after this long
    ranking_half_life_seconds: float = checked(1800.0, positive)
    query_chars: int = checked(200, _between(20, 2000, "characters"))


@dataclass(frozen=True)
class SuggestionsSettings:
    """Index suggestions confirmed by the planner with hypopg (exporters/queries/suggestions.py)."""

    enabled: bool = True
    interval_seconds: float = checked(300.0, positive)
    timeout_seconds: float = checked(30.0, positive)
    limit: int = checked(10, _between(1, 50, "suggestions"))  # series of pg_index_suggestion_*
    tables: int = checked(10, _between(1, 100, "tables"))  # the most sequentially read tables looked at
    queries: int = checked(20, _between(1, 200, "queries"))  # the slowest SELECTs planned
    min_rows: int = checked(1000, _between(0, 10**12, "rows"))  # smaller tables are read whole anyway
    min_cost_reduction: float = checked(0.5, ratio)  # the plan's cost must fall at least this much

    @property
    def statement_timeout_seconds(self) -> float:
        """Each planner call's limit: a share of the run's, so one bad plan cannot use it all."""
        return max(1.0, self.timeout_seconds / 10)


@dataclass(frozen=True)
class QueriesSettings:
    server: QueriesServerSettings = dataclasses.field(default_factory=QueriesServerSettings)
    database: QueriesDatabaseSettings = dataclasses.field(default_factory=QueriesDatabaseSettings)
    statements: StatementsSettings = dataclasses.field(default_factory=StatementsSettings)
    suggestions: SuggestionsSettings = dataclasses.field(default_factory=SuggestionsSettings)

    def validate(self, source: str) -> None:
        url = self.database.url
        if not url.startswith(("postgresql://", "postgresql+psycopg://")):
            raise ConfigError(
                "database.url", f"environment variable {ENV_PREFIX}_DATABASE__URL", "a postgresql+psycopg:// URL"
            )
        if self.statements.timeout_seconds > self.statements.interval_seconds:
            raise ConfigError("statements.timeout_seconds", source, "at most statements.interval_seconds")
        if self.suggestions.timeout_seconds > self.suggestions.interval_seconds:
            raise ConfigError("suggestions.timeout_seconds", source, "at most suggestions.interval_seconds")
