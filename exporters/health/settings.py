"""The health exporter's config: server section, probe defaults, and one probe per service.

```yaml
server: {host: 127.0.0.1, port: 9102}
defaults: {interval_seconds: 15, timeout_seconds: 5}
probes:
  api: {kind: http, target: "http://127.0.0.1:8000/healthz", degraded_after_seconds: 1, body: {field: status}}
  redis: {kind: redis, target: "redis://127.0.0.1:6379/0"}
```
`HEALTH_EXPORTER_PROBES__REDIS__TARGET=redis://…` overrides one key from the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporters.config import ConfigError, field_of, load_yaml_with_env, section_of
from exporters.health.probes import KINDS, BodyCheck, ProbeSpec, check_target
from exporters.serving import ServerSettings, server_settings

ENV_PREFIX = "HEALTH_EXPORTER"
DEFAULT_PORT = 9102


@dataclass(frozen=True)
class HealthSettings:
    server: ServerSettings
    probes: tuple[ProbeSpec, ...]


def strings(
    section: Mapping[str, Any], key: str, file: str, where: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    values = field_of(section, key, list, file, where, default=list(default))
    return tuple(str(value) for value in values)


def parse_probe(service: str, raw: Any, defaults: Mapping[str, Any], file: str) -> ProbeSpec:
    where = f"probes.{service}"
    if not isinstance(raw, dict):
        raise ConfigError(where, file, "a mapping with kind and target")
    section = {**defaults, **raw}
    kind = field_of(section, "kind", str, file, where)
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind", file, f"one of {', '.join(KINDS)}, got {kind!r}")
    interval = field_of(section, "interval_seconds", float, file, where, default=15.0)
    timeout = field_of(section, "timeout_seconds", float, file, where, default=5.0)
    for key, value in (("interval_seconds", interval), ("timeout_seconds", timeout)):
        if value <= 0:
            raise ConfigError(f"{where}.{key}", file, f"a positive number of seconds, got {value}")
    body = None
    if "body" in raw:
        body_section = section_of(raw, "body", file, where)
        default_check = BodyCheck(field="status")
        body = BodyCheck(
            field=field_of(body_section, "field", str, file, f"{where}.body"),
            healthy=strings(body_section, "healthy", file, f"{where}.body", default_check.healthy),
            degraded=strings(body_section, "degraded", file, f"{where}.body", default_check.degraded),
        )
    expect = field_of(section, "expect_status", list, file, where, default=[200])
    if not all(isinstance(code, int) and 100 <= code <= 599 for code in expect):
        raise ConfigError(f"{where}.expect_status", file, f"a list of HTTP status codes, got {expect!r}")
    headers = section_of(section, "headers", file, where)
    target = field_of(section, "target", str, file, where)
    try:
        check_target(kind, target)
    except ValueError as error:
        raise ConfigError(f"{where}.target", file, str(error)) from error
    return ProbeSpec(
        service=service,
        kind=kind,
        target=target,
        interval_seconds=interval,
        timeout_seconds=timeout,
        degraded_after_seconds=field_of(section, "degraded_after_seconds", float, file, where, default=None),
        expect_status=tuple(expect),
        body=body,
        headers={str(name): str(value) for name, value in headers.items()},
    )


def load_settings(path: str, environ: Mapping[str, str] | None = None) -> HealthSettings:
    """Settings from the YAML file and HEALTH_EXPORTER_* variables; ConfigError on the first bad key."""
    data = load_yaml_with_env(path, ENV_PREFIX, environ)
    defaults = section_of(data, "defaults", path)
    probes = section_of(data, "probes", path)
    if not probes:
        raise ConfigError("probes", path, "at least one probe")
    return HealthSettings(
        server=server_settings(data, path, DEFAULT_PORT),
        probes=tuple(parse_probe(str(service), raw, defaults, path) for service, raw in probes.items()),
    )
