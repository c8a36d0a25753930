"""The desk's per-app resources, registered by `init_app` and reached from views through `resources()`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from flask import Flask, current_app
from sqlalchemy.orm import Session

from service_kit.db import Database
from tickets_app.attachments import AttachmentStore, Scanner
from tickets_app.desk import Desk
from tickets_app.settings import TicketsSettings


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Resources:
    settings: TicketsSettings
    db: Database
    desk: Desk
    attachment_store: AttachmentStore
    scanner: Scanner | None = None
    # The wall clock, swappable so tests can move time forward.
    clock: Callable[[], datetime] = field(default=utc_now)

    @property
    def at_risk(self) -> timedelta:
        return timedelta(minutes=self.settings.sla.at_risk_minutes)

    def init_app(self, app: Flask) -> None:
        app.extensions["tickets"] = self


def resources() -> Resources:
    found: Resources = current_app.extensions["tickets"]
    return found


def desk_of() -> Desk:
    return resources().desk


def now() -> datetime:
    return resources().clock()


def db_session() -> Session:
    """This request's session (the kit scopes it to the app context)."""
    return resources().db.session()
