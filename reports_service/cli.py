"""``vibelux-reports``: the kit's commands (serve, check-config, config env, db upgrade, tokens) plus
``seed-demo`` (make up) and ``run`` (render a saved report to a file, without the server)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from reports_service.app import MIGRATIONS
from reports_service.settings import ReportsSettings
from reports_service.storage import metadata
from service_kit.cli import run, service_cli, settings_loader

load_settings = settings_loader("reports", ReportsSettings, "REPORTS", "config/reports.yml")
cli = service_cli(
    "reports",
    load_settings,
    ReportsSettings,
    "REPORTS",
    "reports_service.wsgi:app",
    database_url=lambda settings: settings.database.url,
    migrations=MIGRATIONS,
    metadata=metadata,
)


@cli.command("seed-demo", help="Create the demo reports and schedule if missing (database direct; before serve).")
@click.option(
    "--demo-usage/--no-demo-usage",
    default=False,
    help="Also fill the platform database's api_usage_rollups with demo rows while the table is empty.",
)
@click.option("--wait-seconds", default=0.0, help="Wait this long for a fresh platform database (make up).")
def seed_demo(demo_usage: bool, wait_seconds: float) -> None:
    from reports_service.demo import seed

    settings = load_settings()
    if demo_usage:
        _demo_usage(settings.platform.url, wait_seconds)
    created = seed(settings)
    click.echo(f"demo reports: {', '.join(created) if created else 'already present'}")


def _demo_usage(url: str, wait_seconds: float) -> None:
    """The demo platform database is made by the business exporter's line of the Procfile, renamed into
    place when done; wait until it is there and fresh (a stale one is about to be replaced)."""
    from demo.usage_rollups import fill

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        deadline = time.monotonic() + wait_seconds
        while not (path.exists() and time.time() - path.stat().st_mtime < 86_400) and time.monotonic() < deadline:
            time.sleep(1)
        if not path.exists():
            raise click.ClickException(f"no platform database at {path}: run python -m demo.business_db first")
    written = fill(url, rows=int(os.environ.get("REPORTS_DEMO_ROWS", "100000")), days=30, if_empty=True)
    click.echo(f"demo usage rollups: {written} rows" if written else "demo usage rollups: already present")


def main() -> None:
    run(cli)


if __name__ == "__main__":
    main()
