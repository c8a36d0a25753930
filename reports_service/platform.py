"""The platform database as a Flask resource (flaskr's ``get_db`` shape): the engine reports read from.

Read-only use: no migrations, and on SQLite no journal-mode change (the demo generator and the business
exporter share the file); a busy timeout rides out the writers' locks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from reports_service.query import ping


class PlatformData:
    def __init__(self) -> None:
        self.engine: Engine | None = None

    def init_app(self, app: Flask, url: str) -> None:
        self.engine = platform_engine(url)
        app.extensions["platform_data"] = self
        kit = app.extensions.get("service_kit")
        if kit is not None:
            kit.health.add_check("platform_database", lambda: ping(self.get_engine()))

    def get_engine(self) -> Engine:
        assert self.engine is not None, "PlatformData.init_app was not called"
        return self.engine


def platform_engine(url: str) -> Engine:
    """On SQLite the file must exist (``mode=rw``): a missing platform database is an error to report, not
    an empty file to create (which would also look fresh to ``demo.business_db --if-stale``)."""
    kwargs: dict[str, Any] = {}
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            path = Path(parsed.database).resolve()
            parsed = parsed.set(database=f"file:{path}", query={"mode": "rw", "uri": "true"})
    else:
        kwargs["pool_pre_ping"] = True
    return create_engine(parsed, **kwargs)


def current_platform() -> PlatformData:
    platform: PlatformData = current_app.extensions["platform_data"]
    return platform
