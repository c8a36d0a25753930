"""The Alembic migration creates exactly what the models describe (plus the FTS5 index)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from tickets_app.cli import migrate
from tickets_app.models import Base


def only_desk_tables(name: str | None, kind: str, _parents: object) -> bool:
    """Leave out the FTS5 shadow tables and the kit's own tables, which other migrations own."""
    return kind != "table" or name in Base.metadata.tables


def test_migration_matches_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    migrate(url)
    migrate(url)  # idempotent
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": only_desk_tables})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
    assert "ticket_fts" in inspect(engine).get_table_names()
