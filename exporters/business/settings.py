"""The business exporter's settings: where to serve, which database, and the named queries."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from exporters.business.analytics import check_spec, metric_specs
from exporters.business.queries import QuerySpec
from exporters.serving import ExporterServerSettings
from service_kit.config import ConfigError, checked, port_check, secret

ENV_PREFIX = "EXPORTER_BUSINESS"


@dataclass(frozen=True)
class BusinessServerSettings(ExporterServerSettings):
    port: int = checked(9103, port_check)


@dataclass(frozen=True)
class BusinessDatabaseSettings:
    """The platform's database, read only. The URL can hold a password: environment only
    (EXPORTER_BUSINESS_DATABASE__URL); the default is the demo database `make up` generates."""

    url: str = secret("sqlite:///.run/demo/platform.sqlite3")


@dataclass(frozen=True)
class BusinessSettings:
    server: BusinessServerSettings = dataclasses.field(default_factory=BusinessServerSettings)
    database: BusinessDatabaseSettings = dataclasses.field(default_factory=BusinessDatabaseSettings)
    queries: dict[str, QuerySpec] = dataclasses.field(default_factory=dict)

    def validate(self, source: str) -> None:
        if not self.queries:
            raise ConfigError("queries", source, "at least one query")
        owner: dict[str, str] = {}
        for name, spec in self.queries.items():
            problem = check_spec(spec)
            if problem:
                raise ConfigError(f"queries.{name}", source, problem)
            for metric in metric_specs(spec):
                if metric in owner:
                    raise ConfigError(
                        f"queries.{name}.metrics.{metric}", source, f"a metric not already in {owner[metric]}"
                    )
                owner[metric] = f"queries.{name}"
