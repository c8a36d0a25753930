"""`vibelux-exporter-health serve`: probe the platform's dependencies on their schedules, serve the results;
`wait`: hold a start until the probes answer."""

from __future__ import annotations

import time
from collections.abc import Callable

import click

from exporters.health.exporter import HealthExporter
from exporters.health.probes import build_probe
from exporters.health.settings import ENV_PREFIX, HealthSettings
from exporters.serving import Exporter, exporter_cli
from service_kit.index import ServiceDocs
from service_kit.scrub import DEFAULT_SCRUBBER

DOCS = ServiceDocs(
    "Service-health exporter",
    "Probes of the API, database, Redis and providers on their schedules: up, status, latency per service.",
    "Service-health exporter (exporters/health, :9102)",
    "services.md",
)
WAIT_POLL_SECONDS = 0.5


def build(settings: HealthSettings) -> Exporter:
    exporter = HealthExporter(settings.probes)
    return Exporter(exporter.registry, exporter.start, exporter.stop, exporter.book.complete)


def wait_for_probes(settings: HealthSettings, services: list[str], seconds: float) -> dict[str, str]:
    """Run the probes of `services` until each has answered once or `seconds` pass; those still failing,
    each with its last error (scrubbed: a database URL may hold a password).

    Nothing is recorded: a dependency that `make up` is still creating (the demo database) is not a failure of
    it, and the exporter started after this reports only what it sees from then on.
    """
    probes = {service: build_probe(settings.probes[service]) for service in services}
    failing: dict[str, str] = {}
    deadline = time.monotonic() + seconds
    while True:
        for service, probe in list(probes.items()):
            try:
                probe()
            except Exception as error:  # any failure: not yet
                first_line = (str(error).splitlines() or [""])[0][:200]
                failing[service] = DEFAULT_SCRUBBER.scrub_text(f"{type(error).__name__}: {first_line}")
            else:
                del probes[service]
                failing.pop(service, None)
        if not probes or time.monotonic() >= deadline:
            return failing
        time.sleep(WAIT_POLL_SECONDS)


def add_wait_command(group: click.Group, load: Callable[[], HealthSettings]) -> None:
    @group.command(
        "wait",
        help="Exit once every probe named (default: all) has answered once: 0, or 1 naming those still failing "
        "after --seconds. For a start where the dependencies start beside the exporter (make up).",
    )
    @click.argument("services", nargs=-1)
    @click.option("--seconds", default=300.0, show_default=True, help="How long to wait at most.")
    def wait(services: tuple[str, ...], seconds: float) -> None:
        settings = load()
        unknown = sorted(set(services) - set(settings.probes))
        if unknown:
            raise click.BadParameter(f"no probe named {', '.join(unknown)}", param_hint="SERVICES")
        failing = wait_for_probes(settings, list(services or settings.probes), seconds)
        if failing:
            reasons = "; ".join(f"{service} ({error})" for service, error in sorted(failing.items()))
            raise click.ClickException(f"still failing after {seconds:g} s: {reasons}")


main = exporter_cli("health", HealthSettings, ENV_PREFIX, build, DOCS, add_wait_command)


if __name__ == "__main__":
    main()
