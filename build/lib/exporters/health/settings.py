"""The health exporter's settings: where to serve, and one probe per service of the health grid.

```yaml
server: {host: 127.0.0.1, port: 9102}
probes:
  api: {kind: http, target: "http://127.0.0.1:8000/healthz", degraded_after_seconds: 1, body: {field: status}}
  redis: {kind: redis, target: "redis://127.0.0.1:6379/0"}
```
`EXPORTER_HEALTH_PROBES__REDIS__TARGET=redis://…` overrides one key of a probe from the environment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from exporters.health.probes import ProbeSpec, check_target
from exporters.serving import ExporterServerSettings
from service_kit.config import ConfigError, checked, port_check

ENV_PREFIX = "EXPORTER_HEALTH"


@dataclass(frozen=True)
class HealthServerSettings(ExporterServerSettings):
    port: int = checked(9102, port_check)


@dataclass(frozen=True)
class HealthSettings:
    server: HealthServerSettings = dataclasses.field(default_factory=HealthServerSettings)
    probes: dict[str, ProbeSpec] = dataclasses.field(default_factory=dict)

    def validate(self, source: str) -> None:
        """Checks across fields that the loader's per-field checks cannot make."""
        if not self.probes:
            raise ConfigError("probes", source, "at least one probe")
        for service, spec in self.probes.items():
            try:
                check_target(spec.kind, spec.target)
            except ValueError as error:
                raise ConfigError(f"probes.{service}.target", source, str(error)) from None
            if not all(100 <= code <= 599 for code in spec.expect_status):
                raise ConfigError(f"probes.{service}.expect_status", source, "HTTP status codes", spec.expect_status)
