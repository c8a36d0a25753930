"""Fixtures of the support desk tests: a real SQLite database per test, a Desk, actors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from service_kit.auth import create_token
from service_kit.settings import DatabaseSettings, LoggingSettings
from tickets_app.app import create_app
from tickets_app.cli import migrate
from tickets_app.desk import Actor, Desk
from tickets_app.models import Base, StaffUser
from tickets_app.passwords import hash_password
from tickets_app.schemas import TicketChange, TicketInput, TicketQuery, parse
from tickets_app.search import SqliteFtsIndex
from tickets_app.settings import AlertSettings, AttachmentSettings, TicketsSettings, WebSettings

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
AGENT = Actor(id="agent-ann", role="agent", name="Ann Agent")
ADMIN = Actor(id="admin-bob", role="admin", name="Bob Admin")
CUSTOMER = Actor(id="cust-1", role="customer", name="Carla Customer", email="carla@example.com", tier="professional")
WEBHOOK_TOKEN = "alert-webhook-shared-token"
OTHER_CUSTOMER = Actor(id="cust-2", role="customer", name="Otto Other", email="otto@example.com", tier="free")


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = create_engine(f"sqlite:///{tmp_path / 'desk.sqlite3'}")
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        SqliteFtsIndex().create(connection)
    with Session(engine) as db:
        yield db
    engine.dispose()


@pytest.fixture
def desk() -> Desk:
    return Desk(SqliteFtsIndex(), at_risk_seconds=1800, auto_close_days=3)


@dataclass
class Tokens:
    """Bearer tokens for every role of the access matrix."""

    agent: str
    admin: str
    customer: str
    other_customer: str
    service: str
    viewer: str


@pytest.fixture
def settings(tmp_path: Path) -> TicketsSettings:
    url = f"sqlite:///{tmp_path / 'tickets.sqlite3'}"
    migrate(url)
    return TicketsSettings(
        database=DatabaseSettings(url=url),
        attachments=AttachmentSettings(
            directory=str(tmp_path / "files"), max_file_bytes=64 * 1024, max_user_bytes_per_day=256 * 1024
        ),
        alerts=AlertSettings(webhook_token=WEBHOOK_TOKEN),
        web=WebSettings(secret_key="test-secret-key-for-sessions"),
        logging=LoggingSettings(level="WARNING", json=True),
    )


@pytest.fixture
def app(settings: TicketsSettings) -> Flask:
    app = create_app(settings, start_sweeper=False)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def tokens(app: Flask) -> Tokens:
    db = app.extensions["database"]
    with db.new_session() as session:
        session.add_all(
            [
                StaffUser(id="agent-ann", name="Ann Agent", role="agent", password_hash=hash_password("pw")),
                StaffUser(id="admin-bob", name="Bob Admin", role="admin", password_hash=hash_password("pw")),
            ]
        )
        made = Tokens(
            agent=create_token(session, "agent", "agent", subject="agent-ann")[0],
            admin=create_token(session, "admin", "admin", subject="admin-bob")[0],
            customer=create_token(session, "carla", "customer", subject="cust-1", tier="professional")[0],
            other_customer=create_token(session, "otto", "customer", subject="cust-2", tier="free")[0],
            service=create_token(session, "billing-portal", "service")[0],
            viewer=create_token(session, "viewer", "viewer")[0],
        )
        session.commit()
    return made


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def ticket_input(payload: dict[str, Any]) -> TicketInput:
    """A new ticket for the Desk, checked as the API checks it (the kit's ValidationError naming fields)."""
    return parse(TicketInput, payload)


def ticket_change(payload: dict[str, Any]) -> TicketChange:
    return parse(TicketChange, payload)


def ticket_query(args: dict[str, Any]) -> TicketQuery:
    return parse(TicketQuery, args)
