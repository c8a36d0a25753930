"""Fixtures of the support desk tests: a real SQLite database per test, a Desk, actors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from tickets_app.desk import Actor, Desk
from tickets_app.models import Base
from tickets_app.search import SqliteFtsIndex

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
AGENT = Actor(id="agent-ann", role="agent", name="Ann Agent")
ADMIN = Actor(id="admin-bob", role="admin", name="Bob Admin")
CUSTOMER = Actor(id="cust-1", role="customer", name="Carla Customer", email="carla@example.com", tier="pro")
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
