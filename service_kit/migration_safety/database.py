"""The migration check asked of a real database: a fresh SQLite file is upgraded one migration at a time and
its schema reflected after each, so what the static reading (parse) cannot see is found too: SQL built at
run time, run on ``op.get_bind()``, or run by helpers such as the desk's search index.

SQLite only (a file in a temporary directory, nothing to start); PostgreSQL-only branches are read
statically alone. Unlike parse, this runs the migrations, so they must import and run on SQLite, which every
service's do (their tests run them there).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, inspect
from sqlalchemy.types import TypeEngine

from service_kit.db import KIT_MIGRATIONS, KIT_VERSION_TABLE, _alembic_upgrade, make_engine
from service_kit.migration_safety.parse import sql_type
from service_kit.migration_safety.rules import Column, ColumnType, Schema

SERVICE_VERSION_TABLE = "alembic_version"


@dataclass(frozen=True)
class Upgraded:
    """``schemas[0]`` before the first revision, ``schemas[i + 1]`` after revision i; when one failed, the
    schemas stop before it and ``failure`` says which and why, in one line."""

    schemas: list[Schema]
    failure: str | None = None


def upgraded_schemas(migrations_dir: Path, revisions: Sequence[str]) -> Upgraded:
    """Upgrade a fresh SQLite database through ``revisions`` in turn (the kit's tables first, as services do)."""
    own_kit = migrations_dir.resolve() == KIT_MIGRATIONS.resolve()
    version_table = KIT_VERSION_TABLE if own_kit else SERVICE_VERSION_TABLE
    with tempfile.TemporaryDirectory(prefix="vibelux-migrations-") as workdir, _alembic_quiet():
        engine = make_engine(f"sqlite:///{Path(workdir) / 'check.sqlite3'}")
        try:
            if not own_kit:
                _alembic_upgrade(engine, KIT_MIGRATIONS, KIT_VERSION_TABLE, None)
            upgraded = Upgraded([reflect(engine)])
            for revision in revisions:
                try:
                    _alembic_upgrade(engine, migrations_dir, version_table, None, target=revision)
                except Exception as error:  # whatever a migration raises, the check names it in one line
                    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                    return Upgraded(upgraded.schemas, f"upgrade() fails on SQLite: {first}")
                upgraded.schemas.append(reflect(engine))
            return upgraded
        finally:
            engine.dispose()


@contextmanager
def _alembic_quiet() -> Iterator[None]:
    """Alembic logs every step at info: in a process whose logging is set up (a release controller, a test
    run after a service's) the check's scratch upgrades would fill its output."""
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def reflect(engine: Engine) -> Schema:
    """Tables and columns as the database has them (Alembic's version tables left out)."""
    inspector = inspect(engine)
    return {
        table: {
            column["name"]: Column(
                _column_type(column["type"], engine), bool(column["nullable"]), column.get("default") is not None
            )
            for column in inspector.get_columns(table)
        }
        for table in inspector.get_table_names()
        if table not in {KIT_VERSION_TABLE, SERVICE_VERSION_TABLE}
    }


def _column_type(type_: TypeEngine[object], engine: Engine) -> ColumnType | None:
    try:
        return sql_type(type_.compile(dialect=engine.dialect))
    except Exception:  # a type SQLite reports without a name (an FTS5 column): compared as unreadable
        return None
