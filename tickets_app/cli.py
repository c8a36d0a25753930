"""`vibelux-tickets`: serve, check-config, config env, db upgrade, tokens, plus desk commands."""

from __future__ import annotations

from pathlib import Path

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


def main() -> None:
    run(cli)


if __name__ == "__main__":
    main()
