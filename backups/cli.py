"""`vibelux-backup`: serve, check-config, config env, db upgrade, plus setup, replicate, backup, drill, list,
restore."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy.orm import Session

from backups.litestream import Litestream, ReplicaFile, SqliteStore
from backups.pgbackrest import BackupError
from backups.postgres import PostgresStore
from backups.records import BackupRun, Base
from backups.service import Store, run_backup, run_drill
from backups.settings import ENV_PREFIX, BackupSettings, validate
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
    if name in settings.sqlite:
        return settings, SqliteStore(name, settings)
    if name not in settings.postgres:
        configured = ", ".join([*settings.postgres, *settings.sqlite]) or "none"
        raise click.UsageError(f"no store {name!r}; configured: {configured}")
    return settings, PostgresStore(name, settings)


def open_postgres(name: str) -> PostgresStore:
    _settings, store = open_store(name)
    if not isinstance(store, PostgresStore):
        raise click.UsageError(f"{name} is a SQLite store: `vibelux-backup replicate` is its setup")
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
@click.option("--type", "kind", type=click.Choice(["full", "incr"]), default="incr", show_default=True)
def backup(store: str, kind: str) -> None:
    settings, postgres = open_store(store)
    if isinstance(postgres, SqliteStore):
        kind = "sync"
    with recorded(settings) as session:
        row = run_backup(postgres, kind, session)
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
    names = [store] if store else [*settings.postgres, *settings.sqlite]
    click.echo("store\tlabel\ttype\tstarted\tfinished\tdatabase_bytes\trepository_bytes")
    for name in names:
        _settings, opened = open_store(name)
        try:
            if isinstance(opened, SqliteStore):
                _list_sqlite(name, opened.list(), opened)
                continue
            backups = opened.list()
        except BackupError as exc:
            raise click.ClickException(str(exc)) from None
        for item in backups:
            click.echo(
                f"{name}\t{item.label}\t{item.type}\t{item.started_at:%Y-%m-%dT%H:%M:%SZ}\t"
                f"{item.stopped_at:%Y-%m-%dT%H:%M:%SZ}\t{item.size_bytes}\t{item.repository_bytes}"
            )


def _list_sqlite(name: str, files: list[ReplicaFile], store: SqliteStore) -> None:
    """Snapshots (level 9) and the newest shipped transaction: a restore reaches any time between them."""
    snapshots = [item for item in files if item.level == 9]
    newest = max(files, key=lambda item: item.max_txid, default=None)
    for item, kind in [*((snapshot, "snapshot") for snapshot in snapshots), *([(newest, "latest")] if newest else [])]:
        click.echo(
            f"{name}\ttxid-{item.max_txid:x}\t{kind}\t-\t{item.shipped_at:%Y-%m-%dT%H:%M:%SZ}\t"
            f"{store.path.stat().st_size if kind == 'latest' and store.path.exists() else '-'}\t{item.size_bytes}"
        )


@cli.command(help="Stop the store's service, restore it (to --to, else the latest point), check, start it.")
@click.option("--store", required=True)
@click.option("--to", "target", callback=parse_time, default=None, help="ISO 8601 time with zone.")
@click.option("--dry-run", is_flag=True, help="Show what would be restored and changed, change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask before stopping the service.")
def restore(store: str, target: datetime | None, dry_run: bool, yes: bool) -> None:
    _settings, postgres = open_store(store)
    if isinstance(postgres, SqliteStore):
        _restore_sqlite(postgres, target, dry_run, yes)
        return
    try:
        plan = postgres.plan_restore(target)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    point = plan.target.isoformat() if plan.target else "the end of the archived WAL (latest)"
    click.echo(f"store: {store}\nbackup: {plan.backup.label} ({plan.backup.type}, finished "
               f"{plan.backup.stopped_at.isoformat()})\nrecover to: {point}\ndata directory: {plan.data_dir}\n"
               f"current data set aside as: {plan.set_aside}")  # fmt: skip
    if dry_run:
        click.echo("dry run: nothing changed")
        return
    if not yes:
        click.confirm("stop the service and restore?", abort=True)
    try:
        postgres.restore(plan)
    except BackupError as exc:
        raise click.ClickException(f"restore failed: {exc}") from None
    click.echo(f"{store}: restored, checked (pg_amcheck) and running; the old data is in {plan.set_aside}")


def _restore_sqlite(store: SqliteStore, target: datetime | None, dry_run: bool, yes: bool) -> None:
    try:
        plan = store.plan_restore(target)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    point = plan.target.isoformat() if plan.target else "the newest shipped transaction (latest)"
    newest = plan.newest
    click.echo(f"store: {store.name}\nreplica: txid {newest.max_txid:x} shipped {newest.shipped_at.isoformat()}\n"
               f"recover to: {point}\ndatabase: {plan.path}\ncurrent data set aside as: {plan.set_aside}")  # fmt: skip
    if dry_run:
        click.echo("dry run: nothing changed")
        return
    if not yes:
        click.confirm("stop the service (and its replicator) and restore?", abort=True)
    try:
        store.restore(plan)
    except BackupError as exc:
        raise click.ClickException(f"restore failed: {exc}") from None
    click.echo(f"{store.name}: restored, checked (integrity_check) and started; the old data is in {plan.set_aside}")


def main() -> None:
    run(cli)


if __name__ == "__main__":
    main()
