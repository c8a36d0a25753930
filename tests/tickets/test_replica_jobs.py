"""The desk's periodic work (SLA breaches, auto-close) on one PostgreSQL shared by several replicas."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from service_kit.db import make_engine
from tests.servers import PostgresServer, wait_until
from tests.tickets.conftest import AGENT, CUSTOMER
from tickets_app.cli import migrate
from tickets_app.desk import Desk
from tickets_app.models import Ticket, TicketEvent
from tickets_app.search import PostgresFtsIndex

pytestmark = pytest.mark.integration


def closed_events(session: Session, ticket_id: int) -> int:
    query = select(func.count()).where(
        TicketEvent.ticket_id == ticket_id, TicketEvent.kind == "status", TicketEvent.data["to"].as_string() == "closed"
    )
    return int(session.scalar(query) or 0)


def test_concurrent_sweeps_auto_close_a_ticket_once(postgres_server: PostgresServer) -> None:
    """Two sweeps at once (two replicas, or an old and a new one during a rolling deploy) close it once."""
    engine = make_engine(postgres_server.fresh_database("sweep_race"))
    migrate(engine.url.render_as_string(hide_password=False))
    desk = Desk(PostgresFtsIndex(), auto_close_days=1)
    now = datetime.now(UTC)
    with Session(engine) as session:
        ticket = desk.create_ticket(session, CUSTOMER, {"subject": "race", "body": "b"}, now - timedelta(days=3))
        desk.update_ticket(session, AGENT, ticket, {"status": "resolved"}, now - timedelta(days=2))
        session.commit()
        ticket_id = ticket.id
    first, second = Session(engine), Session(engine)
    desk.sweep(first, now)  # closes the ticket; not committed yet
    done = threading.Event()

    def other_replica() -> None:
        desk.sweep(second, now)
        second.commit()
        done.set()

    thread = threading.Thread(target=other_replica)
    thread.start()
    with engine.connect() as probe:  # the second sweep either finished or waits for the first one's lock

        def settled() -> bool:
            waiting = probe.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar()
            probe.commit()
            return done.is_set() or bool(waiting)

        wait_until(settled, timeout=10)
    first.commit()
    thread.join(10)
    with Session(engine) as session:
        assert session.get(Ticket, ticket_id).status == "closed"
        assert closed_events(session, ticket_id) == 1
    first.close()
    second.close()
    engine.dispose()
