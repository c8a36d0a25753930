"""`vibelux-backup`: serve, check-config, config env, db upgrade, plus setup, replicate, backup, drill, list,
restore."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy.orm import Session

from backups.litestream import Litestream
from backups.postgres import PostgresStore
from backups.records import BackupRun, Base
from backups.service import open_stores, run_backup, run_drill
from backups.settings import ENV_PREFIX, BackupSettings, validate
from backups.store import BackupError, Store
from service_kit.cli import config_path, run, service_cli
from service_kit.config import load_settings as load_file
from service_kit.db import make_engine, upgrade

MIGRATIONS = Path(__file__).with_name("migrations")
DEFAULT_CONFIG = "config/backups.yml"


def load_settings() -> BackupSettings:
    path = config_path("backup", DEFAULT_CONFIG)
    return validate(load_file(BackupSettings, path, ENV_PREFIX), str(path) if path else "<defaults>")


cli = service_cli(
    "backup",
    load_settings,
    BackupSettings,
    ENV_PREFIX,
    "backups.wsgi:app",
    database_url=lambda settings: settings.database.url,
    migrations=MIGRATIONS,
    metadata=Base.metadata,
)


def open_store(name: str) -> tuple[BackupSettings, Store]:
    settings = load_settings()
    stores = open_stores(settings)
    if name not in stores:
        raise click.UsageError(f"no store {name!r}; configured: {', '.join(stores) or 'none'}")
    return settings, stores[name]


def open_postgres(name: str) -> PostgresStore:
    _settings, store = open_store(name)
    if not isinstance(store, PostgresStore):
        raise click.UsageError(f"{name} is not a PostgreSQL store: only those need setup (SQLite: `replicate`)")
    return store


def recorded(settings: BackupSettings) -> Session:
    engine = make_engine(settings.database.url)
    upgrade(engine, MIGRATIONS, Base.metadata)
    return Session(engine)


def parse_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO 8601 time with its zone (2026-12-01T10:00:00Z): a restore target must not depend on the host."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("expected an ISO 8601 time such as 2026-12-01T10:00:00Z") from None
    if parsed.tzinfo is None:
        raise click.BadParameter("the time needs a zone, e.g. 2026-12-01T10:00:00Z")
    return parsed.astimezone(UTC)


@cli.command(help="Turn on WAL archiving for a store and create its place in the repository.")
@click.option("--store", required=True)
def setup(store: str) -> None:
    postgres = open_postgres(store)
    try:
        if postgres.configure():
            raise click.ClickException(f"{store}: archiving configured; restart PostgreSQL, then run setup again")
        postgres.create_stanza()
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{store}: WAL archiving works and the stanza exists")


@cli.command(help="Replicate every SQLite store to the object store with Litestream (runs until stopped).")
def replicate() -> None:
    settings = load_settings()
    if not settings.sqlite:
        raise click.UsageError("no sqlite stores configured")
    tool = Litestream(settings)
    tool.write_config()
    argv = tool.argv("replicate")
    # become litestream: the supervisor's signals reach it directly and it exits with its own status
    os.execve(argv[0], argv, tool.environment())  # noqa: S606 - a fixed argv from our settings, no shell


@cli.command(help="Take a backup now (recorded like the scheduled ones); a SQLite store proves its replica current.")
@click.option("--store", required=True)
@click.option("--type", "kind", default=None, help="full or incr (the default) for PostgreSQL and file stores.")
def backup(store: str, kind: str | None) -> None:
    settings, opened = open_store(store)
    kinds = [kind for kind in opened.schedule() if kind != "drill"]
    chosen = kind or ("incr" if "incr" in kinds else kinds[0])
    if chosen not in kinds:
        raise click.BadParameter(f"{store} takes {' or '.join(kinds)}", param_hint="--type")
    with recorded(settings) as session:
        row = run_backup(opened, chosen, session)
        session.commit()
    _report(row)


@cli.command(help="Restore the latest backup into scratch, check it and its sentinel row (recorded).")
@click.option("--store", required=True)
def drill(store: str) -> None:
    settings, postgres = open_store(store)
    with recorded(settings) as session:
        row = run_drill(postgres, session)
        session.commit()
    _report(row)


def _report(row: BackupRun) -> None:
    """One line; a failed run exits 1, so cron or a shell script notices."""
    click.echo(f"{'ok' if row.ok else 'FAILED'} in {row.duration_seconds:.1f}s: {row.detail}", err=not row.ok)
    if not row.ok:
        raise SystemExit(1)


@cli.command("list", help="The backups in the repository, oldest first, with times and sizes.")
@click.option("--store", default=None, help="One store (default: all).")
def list_backups(store: str | None) -> None:
    settings = load_settings()
    names = [store] if store else settings.store_names()
    click.echo("store\tlabel\ttype\tstarted\tfinished\tdatabase_bytes\trepository_bytes")
    for name in names:
        _settings, opened = open_store(name)
        try:
            rows = opened.listing()
        except BackupError as exc:
            raise click.ClickException(str(exc)) from None
        for row in rows:
            started = f"{row.started_at:%Y-%m-%dT%H:%M:%SZ}" if row.started_at else "-"
            sizes = ["-" if size is None else str(size) for size in (row.database_bytes, row.repository_bytes)]
            click.echo("\t".join([name, row.label, row.type, started, f"{row.finished_at:%Y-%m-%dT%H:%M:%SZ}", *sizes]))


@cli.command(help="Stop the store's service, restore it (to --to, else the latest point), check, start it.")
@click.option("--store", required=True)
@click.option("--to", "target", callback=parse_time, default=None, help="ISO 8601 time with zone.")
@click.option("--dry-run", is_flag=True, help="Show what would be restored and changed, change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask before stopping the service.")
def restore(store: str, target: datetime | None, dry_run: bool, yes: bool) -> None:
    _settings, opened = open_store(store)
    try:
        plan = opened.plan_restore(target)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    point = plan.target.isoformat() if plan.target else f"{plan.latest} (latest)"
    click.echo(f"store: {store}\nfrom: {plan.source}\nrecover to: {point}\nreplaces: {plan.location}\n"
               f"current data set aside as: {plan.set_aside}\ncheck: {plan.check}")  # fmt: skip
    if dry_run:
        click.echo("dry run: nothing changed")
        return
    if not yes:
        click.confirm("stop the service and restore?", abort=True)
    try:
        opened.restore(plan)
    except BackupError as exc:
        raise click.ClickException(f"restore failed: {exc}") from None
    click.echo(f"{store}: restored, checked ({plan.check}) and started; the old data is in {plan.set_aside}")


def main() -> None:
    run(cli)


if __name__ == "__main__":
    main()
