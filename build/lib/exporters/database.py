"""SQLAlchemy engines for the exporters: read-only SQLite, bounded connect waits, per-statement deadlines."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy
from sqlalchemy.engine import Connection, Engine


def read_only_engine(url_text: str, timeout_seconds: float) -> Engine:
    """An engine that cannot create or change a SQLite file and gives up connecting after the timeout.

    Probing or querying a missing SQLite file must fail, not create an empty database.
    """
    url = sqlalchemy.make_url(url_text)
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        connect_args["timeout"] = timeout_seconds  # wait for a locked database at most this long
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            url = url.set(database=f"file:{url.database}", query={**url.query, "mode": "ro", "uri": "true"})
    elif url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = max(1, round(timeout_seconds))
    return sqlalchemy.create_engine(url, connect_args=connect_args, pool_pre_ping=True)


@contextmanager
def statement_deadline(connection: Connection, seconds: float) -> Iterator[None]:
    """Make the database itself abandon statements running longer than `seconds` on this connection.

    PostgreSQL: `SET LOCAL statement_timeout` for the current transaction. SQLite: a progress handler that
    interrupts the statement once the deadline has passed. Other databases rely on the job's hard timeout.
    """
    backend = connection.dialect.name
    if backend == "postgresql":
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}")
        yield
    elif backend == "sqlite":
        raw = connection.connection.driver_connection
        deadline = time.monotonic() + seconds
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)  # type: ignore[union-attr]
        try:
            yield
        finally:
            raw.set_progress_handler(None, 0)  # type: ignore[union-attr]
    else:
        yield
