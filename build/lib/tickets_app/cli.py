"""`vibelux-tickets`: serve, check-config, config env, db upgrade, tokens, plus desk commands."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy.orm import Session

from service_kit.cli import run, service_cli, settings_loader
from service_kit.db import make_engine, upgrade
from tickets_app.models import Base
from tickets_app.settings import TicketsSettings

MIGRATIONS = Path(__file__).with_name("migrations")
load_settings = settings_loader("tickets", TicketsSettings, "TICKETS", "config/tickets.yml")
cli = service_cli(
    "tickets",
    load_settings,
    TicketsSettings,
    "TICKETS",
    "tickets_app.wsgi:app",
    database_url=lambda settings: settings.database.url,
    migrations=MIGRATIONS,
    metadata=Base.metadata,
)


def migrate(url: str) -> None:
    upgrade(make_engine(url), MIGRATIONS, Base.metadata)


@cli.command(help="Fill an empty desk with demo data and print a web UI login (resets the demo password).")
@click.option("--tickets", default=300, show_default=True, help="How many tickets to create.")
def demo(tickets: int) -> None:
    from tickets_app.app import build_desk
    from tickets_app.demo import seed

    settings = load_settings()
    migrate(settings.database.url)
    with Session(make_engine(settings.database.url)) as session:
        password = seed(session, build_desk(settings), tickets)
    click.echo(
        f"support desk UI: http://{settings.server.host}:{settings.server.port}/login  "
        f"user ann (agent) or admin (admin), password {password}"
    )


@cli.command(help="Record due SLA breaches and auto-close resolved tickets once (the app also does this).")
def sweep() -> None:
    from tickets_app.app import build_desk

    settings = load_settings()
    with Session(make_engine(settings.database.url)) as session:
        build_desk(settings).sweep(session, datetime.now(UTC))
        session.commit()


def main() -> None:
    run(cli)


if __name__ == "__main__":
    main()
