"""The command line every service shares: serve, check-config, config env, db upgrade, tokens.

A service builds its CLI with ``service_cli(...)`` and adds its own commands to the returned group.
Configuration errors end the command with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import select

from service_kit.auth import ApiToken, AuditRecord, Principal, create_token, revoke_token
from service_kit.config import ConfigError, describe_environment, load_settings
from service_kit.db import make_engine, upgrade
from service_kit.errors import APIError
from service_kit.server import serve

S = TypeVar("S")


def readable_time(moment: float | datetime) -> str:
    """A time as a person reads it in a terminal (UTC, to the second), not epoch seconds or an ISO string with
    microseconds; from epoch seconds or a datetime (one without a zone is UTC, as SQLite returns them)."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def config_path(service: str, default: str) -> Path | None:
    """``VIBELUX_<SERVICE>_CONFIG`` if set, else the default file when it exists, else defaults only."""
    variable = f"VIBELUX_{service.upper()}_CONFIG"
    if variable in os.environ:
        return Path(os.environ[variable])
    path = Path(default)
    return path if path.exists() else None


def settings_loader(service: str, settings_cls: type[S], env_prefix: str, default_path: str) -> Callable[[], S]:
    def load() -> S:
        return load_settings(settings_cls, config_path(service, default_path), env_prefix)

    return load


def service_cli(
    service: str,
    load: Callable[[], Any],
    settings_cls: type,
    env_prefix: str,
    wsgi_target: str,
    database_url: Callable[[Any], str] | None = None,
    migrations: Path | None = None,
    metadata: Any = None,
) -> click.Group:
    """The shared commands; ``database_url`` enables ``db upgrade`` and ``tokens``."""

    @click.group(help=f"VibeLux Ops {service}.")
    def group() -> None:
        pass

    @group.command(help="Run the service under granian.")
    def serve_command() -> None:
        settings = load()
        if database_url is not None:
            upgrade(make_engine(database_url(settings)), migrations, metadata)
        serve(service, wsgi_target, settings.server)

    serve_command.name = "serve"

    add_config_commands(group, load, settings_cls, env_prefix)
    if database_url is not None:
        _add_database_commands(group, load, database_url, migrations, metadata)
    return group


def add_config_commands(group: click.Group, load: Callable[[], Any], settings_cls: type, env_prefix: str) -> None:
    """``check-config`` and ``config env``, shared by every service and exporter."""

    @group.command("check-config", help="Validate the configuration and exit.")
    def check_config() -> None:
        load()
        click.echo("configuration ok")

    @group.group("config", help="Inspect configuration.")
    def config_group() -> None:
        pass

    @config_group.command("env", help="List every environment variable and its current value.")
    def config_env() -> None:
        for variable, value in describe_environment(settings_cls, env_prefix, load()):
            click.echo(f"{variable}={value}")


def _add_database_commands(
    group: click.Group,
    load: Callable[[], Any],
    database_url: Callable[[Any], str],
    migrations: Path | None,
    metadata: Any,
) -> None:
    from sqlalchemy.orm import Session

    def session() -> Session:
        engine = make_engine(database_url(load()))
        upgrade(engine, migrations, metadata)
        return Session(engine)

    cli_actor = Principal(id=f"cli:{getpass.getuser()}", role="admin", kind="cli")

    def audit(db: Session, action: str, token: ApiToken, before: Any = None) -> None:
        db.add(
            AuditRecord(
                actor=cli_actor.id,
                actor_role=cli_actor.role,
                action=action,
                target_type="api_token",
                target_id=str(token.id),
                before=before,
                after=token.as_dict(),
            )
        )

    @group.group("db", help="Database maintenance.")
    def db_group() -> None:
        pass

    @db_group.command("upgrade", help="Apply migrations.")
    def db_upgrade() -> None:
        upgrade(make_engine(database_url(load())), migrations, metadata)
        click.echo("database up to date")

    @group.group("tokens", help="API tokens (stored hashed; the value is shown once).")
    def tokens() -> None:
        pass

    @tokens.command("create")
    @click.option("--name", required=True)
    @click.option("--role", required=True)
    @click.option("--subject", default=None, help="User or customer id the token acts as.")
    @click.option("--tier", default=None)
    def tokens_create(name: str, role: str, subject: str | None, tier: str | None) -> None:
        with session() as db:
            try:
                plain, token = create_token(db, name, role, subject, tier)
            except APIError as exc:
                raise click.UsageError(f"{exc.message} {exc.details}") from None
            audit(db, "token.create", token)
            db.commit()
            click.echo(plain)
            click.echo(f"created token {token.id} ({token.prefix}…) role={role}", err=True)

    @tokens.command("list")
    def tokens_list() -> None:
        with session() as db:
            for token in db.scalars(select(ApiToken).order_by(ApiToken.id)):
                state = "revoked" if token.revoked_at else "active"
                click.echo(f"{token.id}\t{token.prefix}…\t{token.role}\t{state}\t{token.name}")

    @tokens.command("revoke")
    @click.argument("token_id", type=int)
    def tokens_revoke(token_id: int) -> None:
        with session() as db:
            try:
                before = db.get(ApiToken, token_id)
                snapshot = before.as_dict() if before else None
                token = revoke_token(db, token_id)
            except APIError as exc:
                raise click.UsageError(exc.message) from None
            audit(db, "token.revoke", token, snapshot)
            db.commit()
            click.echo(f"revoked token {token_id}")


def run(group: click.Group, argv: list[str] | None = None) -> None:
    """Entry point wrapper: a bad configuration is one line on stderr and exit code 2."""
    try:
        group.main(args=argv, standalone_mode=False)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
