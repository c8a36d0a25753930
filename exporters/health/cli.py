"""`vibelux-exporter-health [--config PATH]`: probe the platform's dependencies, serve the results."""

from __future__ import annotations

from collections.abc import Sequence

from exporters.health.exporter import HealthExporter
from exporters.health.settings import load_settings
from exporters.serving import config_path, register_build_info, run_cli, serve


def main(argv: Sequence[str] | None = None) -> int:
    def run() -> None:
        settings = load_settings(config_path(argv, "health"))
        exporter = HealthExporter(settings.probes)
        register_build_info(exporter.registry, "health")
        serve(exporter.registry, settings.server, exporter.start, exporter.stop)

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
