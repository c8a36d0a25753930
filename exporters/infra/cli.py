"""`vibelux-exporter-infra serve`: host metrics under node_exporter's names and the stack's processes."""

from __future__ import annotations

import psutil
from prometheus_client import CollectorRegistry

from exporters.infra.collector import NodeCollector, ProcessGroup, ProcessGroupCollector
from exporters.infra.settings import ENV_PREFIX, InfraSettings
from exporters.serving import Exporter, exporter_cli
from service_kit.index import ServiceDocs

DOCS = ServiceDocs(
    "Infrastructure exporter",
    "Host metrics under node_exporter's names, and CPU, memory and counts of the stack's own processes.",
    "Infrastructure exporter (exporters/infra, :9101)",
    "infrastructure.md",
)


def build(settings: InfraSettings) -> Exporter:
    """A registry with the selected node collectors and the process groups, reading the real psutil."""
    registry = CollectorRegistry()
    registry.register(
        NodeCollector(
            psutil,
            [name for name in settings.collectors if name != "processes"],
            disk_device_exclude=settings.disk_device_exclude,
            fs_mountpoint_exclude=settings.fs_mountpoint_exclude,
            fs_type_exclude=settings.fs_type_exclude,
            net_device_exclude=settings.net_device_exclude,
        )
    )
    if "processes" in settings.collectors and settings.processes:
        groups = [ProcessGroup(name, pattern) for name, pattern in settings.processes.items()]
        registry.register(ProcessGroupCollector(psutil, groups))
    return Exporter(registry)


main = exporter_cli("infra", InfraSettings, ENV_PREFIX, build, DOCS)

if __name__ == "__main__":
    main()
