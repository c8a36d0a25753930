"""The Alembic migrations create exactly what the models describe, plus each backend's search index."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.orm import Session

from service_kit.db import make_engine
from service_kit.db import upgrade as upgrade_kit
from tests.servers import PostgresServer
from tests.tickets.conftest import CUSTOMER, T0, ticket_input, ticket_query
from tickets_app.cli import MIGRATIONS, migrate
from tickets_app.desk import Desk
from tickets_app.headline_window import window_marks
from tickets_app.listing import SlaWindow, list_tickets
from tickets_app.models import Base
from tickets_app.search import PostgresFtsIndex, SqliteFtsIndex

SEARCH_TABLES = {"sqlite": "ticket_fts", "postgresql": "ticket_search"}
LATER_TABLES = {"alert_states"}  # added after tickets_0002 (tickets_0003)
LATER_INDEXES = {"ix_tickets_merged_into"}  # tickets_0006


def only_desk_tables(name: str | None, kind: str, _parents: object) -> bool:
    """Leave out the search tables and the kit's own tables, which other migrations own."""
    return kind != "table" or name in Base.metadata.tables


def assert_matches_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": only_desk_tables})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
    assert SEARCH_TABLES[engine.dialect.name] in inspect(engine).get_table_names()


def test_migration_matches_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    migrate(url)
    migrate(url)  # idempotent
    engine = create_engine(url)
    assert_matches_models(engine)
    assert "ticket_search" not in inspect(engine).get_table_names()


@pytest.mark.integration
def test_migration_matches_models_on_postgres(postgres_server: PostgresServer) -> None:
    url = postgres_server.fresh_database("tickets_migration")
    migrate(url)
    migrate(url)
    engine = make_engine(url)
    assert_matches_models(engine)
    with engine.connect() as connection:  # tickets_0007: the search document stays in its row
        storage = (
            "SELECT attstorage FROM pg_attribute WHERE attrelid = 'ticket_search'::regclass AND attname = 'document'"
        )
        assert connection.execute(text(storage)).scalar() == "m"
    engine.dispose()


@pytest.mark.integration
def test_tickets_0008_marks_the_rows_indexed_before_it(postgres_server: PostgresServer) -> None:
    """Search rows written before window marks (by tickets_0007's release) get them, fitting their texts, so
    their one-word snippets are cut by the database."""
    engine = make_engine(postgres_server.fresh_database("tickets_marks"))
    upgrade_to(engine, "tickets_0007")
    with Session(engine) as session:
        desk = Desk(PostgresFtsIndex(), at_risk_seconds=1800, auto_close_days=3)
        created = desk.create_ticket(session, CUSTOMER, ticket_input({"subject": "Invoice", "body": "sent twice"}), T0)
        ticket_id = created.id
        session.execute(text("UPDATE ticket_search SET window_marks = NULL, window_marks_md5 = NULL"))
        session.commit()
    migrate(str(engine.url))
    with engine.connect() as connection:
        marks, fits = connection.execute(
            text(
                "SELECT window_marks, window_marks_md5 = md5(concat_ws(E'\\n', subject, public_body)) "
                "FROM ticket_search WHERE ticket_id = :id"
            ),
            {"id": ticket_id},
        ).one()
    assert marks == [1, 3, *window_marks("Invoice", "sent twice")] and fits is True
    engine.dispose()


def test_sqlite_database_of_the_first_revision_upgrades_unchanged(tmp_path: Path) -> None:
    """A desk created before tickets_0002 keeps its schema, its rows and its search rows, and still finds
    them. Only tickets changes, without rebuilding the table (a rebuild drops it, and the drop would
    cascade to every message): tickets_0004 lets customer_tier be null, tickets_0005 adds sla_due_at, and
    tickets_0006 adds an index on it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    upgrade_to_first_revision(engine)
    desk_schema = [row for row in _schema(engine) if row[0] != "tickets"]
    insert_old_ticket(engine)
    with Session(engine) as session:
        SqliteFtsIndex().reindex(session, [7])  # what the desk of that revision wrote on every change
        session.commit()
    migrate(str(engine.url))
    assert [row for row in _schema(engine) if row[0] not in LATER_TABLES | LATER_INDEXES | {"tickets"}] == desk_schema
    with engine.connect() as connection:
        head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
        assert connection.execute(text("SELECT count(*) FROM messages")).scalar() == 1
    with Session(engine) as session:
        page = list_tickets(session, SqliteFtsIndex(), CUSTOMER, ticket_query({"q": "invoices"}), WINDOW)
        assert [found.id for found in page.tickets] == [7]
        assert page.tickets[0].sla_due_at == OLD_FIRST_RESPONSE_DUE  # the earliest of its stored deadlines
    engine.dispose()


OLD_FIRST_RESPONSE_DUE = T0 + timedelta(hours=1)
WINDOW = SlaWindow(T0, timedelta(minutes=30))


def insert_old_ticket(engine: Engine) -> None:
    """Ticket 7 and its message as the desk of tickets_0001 stored them: deadlines, no sla_due_at yet."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tickets (id, subject, status, priority, customer_id, customer_name, customer_email, "
                "customer_tier, created_at, updated_at, sla_breached, first_response_due_at, resolution_due_at) "
                "VALUES (7, 'Old invoice question', 'open', 'low', 'cust-1', 'C', '', 'pro', :created, :created, "
                "false, :first, :resolution)"
            ),
            {
                "created": T0.replace(tzinfo=None),
                "first": OLD_FIRST_RESPONSE_DUE.replace(tzinfo=None),
                "resolution": (T0 + timedelta(hours=8)).replace(tzinfo=None),
            },
        )
        connection.execute(
            text(
                "INSERT INTO messages (ticket_id, author_kind, author_id, author_name, body, internal, created_at) "
                "VALUES (7, 'customer', 'cust-1', 'C', 'sent before the upgrade', false, :created)"
            ),
            {"created": T0.replace(tzinfo=None)},
        )


@pytest.mark.integration
def test_postgres_desk_of_the_first_revision_gets_its_tickets_indexed(postgres_server: PostgresServer) -> None:
    engine = make_engine(postgres_server.fresh_database("tickets_upgrade"))
    upgrade_to_first_revision(engine)
    insert_old_ticket(engine)
    migrate(str(engine.url))
    with Session(engine) as session:
        for query in ("invoices", "upgrade"):
            page = list_tickets(session, PostgresFtsIndex(), CUSTOMER, ticket_query({"q": query}), WINDOW)
            assert [found.id for found in page.tickets] == [7], query
        assert page.tickets[0].sla_due_at == OLD_FIRST_RESPONSE_DUE
    engine.dispose()


def upgrade_to_first_revision(engine: Engine) -> None:
    """The kit's tables and the desk as it was before tickets_0002."""
    upgrade_to(engine, "tickets_0001")


def upgrade_to(engine: Engine, revision: str) -> None:
    """The kit's tables and the desk as it was at ``revision``."""
    upgrade_kit(engine)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes.update(connection=connection, version_table="alembic_version", metadata=Base.metadata)
        command.upgrade(config, revision)


def _schema(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"))
        return [(name, sql) for name, sql in rows]
