"""SQLAlchemy for the services that store data: one engine per app, a session per request, Alembic.

The kit's own tables (API tokens, audit log) have their own Alembic history with its own version table,
applied before a service's migrations, so every service database carries them without copying them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config as AlembicConfig
from flask import Flask, current_app
from flask.globals import app_ctx
from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session, sessionmaker

KIT_MIGRATIONS = Path(__file__).with_name("migrations")
KIT_VERSION_TABLE = "service_kit_alembic_version"


class KitBase(DeclarativeBase):
    """Declarative base of the kit's own tables."""


def make_engine(url: str, echo: bool = False) -> Engine:
    """An engine with SQLite made fit for several threads and processes (WAL, busy timeout, FKs).

    psycopg never prepares statements on the server (`prepare_threshold=None`), so PostgreSQL plans each
    one for its parameters. Prepared after five runs, a statement may switch to a generic plan made
    without them: the desk's search ran a common word on a plan guessed for a rare one (1.4 s at 100k
    tickets), and a report's range could do the same. Named prepared statements also break behind a
    pooler in transaction mode (PgBouncer, most managed poolers). Parsing each time costs no round trip.
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
        if parsed.get_driver_name() == "psycopg":
            kwargs["connect_args"] = {"prepare_threshold": None}
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _app_context_id() -> int:
    return id(app_ctx._get_current_object())  # type: ignore[attr-defined]


class Database:
    """Flask resource: ``db.session`` lives for one app context and is removed at teardown."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.session_factory: sessionmaker[Session] = sessionmaker(expire_on_commit=False)
        self.session: scoped_session[Session] = scoped_session(self.session_factory, scopefunc=_app_context_id)

    def init_app(self, app: Flask, url: str, echo: bool = False) -> None:
        self.engine = make_engine(url, echo)
        self.session_factory.configure(bind=self.engine)
        app.extensions["database"] = self
        app.teardown_appcontext(self._remove_session)

        kit = app.extensions.get("service_kit")
        if kit is not None:
            kit.health.add_check("database", self.ping)
            kit.statements.instrument(self.engine)

    def _remove_session(self, _exc: BaseException | None) -> None:
        self.session.remove()

    def ping(self) -> bool:
        assert self.engine is not None
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True

    def new_session(self) -> Session:
        """A session outside any request (CLI commands, background jobs); the caller closes it."""
        return self.session_factory()


def current_db() -> Database:
    """The database resource of the current app (flaskr's ``get_db``): one per app, so apps never share."""
    database: Database = current_app.extensions["database"]
    return database


def upgrade(engine: Engine, script_location: str | Path | None = None, metadata: MetaData | None = None) -> None:
    """Apply the kit's migrations, then the service's (when given), each with its own version table."""
    _alembic_upgrade(engine, KIT_MIGRATIONS, KIT_VERSION_TABLE, KitBase.metadata)
    if script_location is not None:
        _alembic_upgrade(engine, Path(script_location), "alembic_version", metadata)


def _alembic_upgrade(
    engine: Engine, location: Path, version_table: str, metadata: MetaData | None, target: str = "head"
) -> None:
    """``target``: a revision, for service_kit.migration_safety's step-by-step upgrade."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(location))
    with engine.begin() as connection:
        config.attributes.update(connection=connection, version_table=version_table, metadata=metadata)
        command.upgrade(config, target)


def run_migrations_env() -> None:
    """Body of every ``env.py``: run online against the connection ``upgrade`` passed in."""
    config = context.config
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=config.attributes.get("metadata"),
        version_table=config.attributes.get("version_table", "alembic_version"),
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
