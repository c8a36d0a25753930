"""The infra exporter's settings: which node_exporter collectors, their exclusions, and process groups."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from exporters.infra.collector import (
    ALL_COLLECTORS,
    DEFAULT_DISK_DEVICE_EXCLUDE,
    DEFAULT_FS_MOUNTPOINT_EXCLUDE,
    DEFAULT_FS_TYPE_EXCLUDE,
)
from exporters.serving import ExporterServerSettings
from service_kit.config import ConfigError, checked, port_check

ENV_PREFIX = "EXPORTER_INFRA"


@dataclass(frozen=True)
class InfraServerSettings(ExporterServerSettings):
    port: int = checked(9101, port_check)


@dataclass(frozen=True)
class InfraSettings:
    server: InfraServerSettings = dataclasses.field(default_factory=InfraServerSettings)
    collectors: list[str] = dataclasses.field(default_factory=lambda: list(ALL_COLLECTORS))
    disk_device_exclude: str = DEFAULT_DISK_DEVICE_EXCLUDE
    fs_mountpoint_exclude: str = DEFAULT_FS_MOUNTPOINT_EXCLUDE
    fs_type_exclude: str = DEFAULT_FS_TYPE_EXCLUDE
    net_device_exclude: str = ""
    # group name (the `name` label) -> regex searched in each process's command line
    processes: dict[str, str] = dataclasses.field(default_factory=dict)

    def validate(self, source: str) -> None:
        unknown = sorted(set(self.collectors) - set(ALL_COLLECTORS))
        if unknown:
            raise ConfigError("collectors", source, "names from " + ", ".join(ALL_COLLECTORS), unknown)
        patterns = {
            "disk_device_exclude": self.disk_device_exclude,
            "fs_mountpoint_exclude": self.fs_mountpoint_exclude,
            "fs_type_exclude": self.fs_type_exclude,
            "net_device_exclude": self.net_device_exclude,
            **{f"processes.{name}": pattern for name, pattern in self.processes.items()},
        }
        for key, pattern in patterns.items():
            try:
                re.compile(pattern)
            except re.error as error:
                raise ConfigError(key, source, f"a regular expression ({error})", pattern) from None
            if key.startswith("processes.") and not pattern:
                raise ConfigError(key, source, "a non-empty regular expression", pattern)
