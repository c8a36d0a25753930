"""The PostgreSQL search index (tsvector side table, GIN index, unaccent + English configuration)

SQLite databases are left as they are: their FTS5 index comes from tickets_0001.

Revision ID: tickets_0002
Revises: tickets_0001
"""

from alembic import op

from tickets_app.search import PostgresFtsIndex

revision = "tickets_0002"
down_revision = "tickets_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        index = PostgresFtsIndex()
        index.create(op.get_bind())
        index.rebuild_all(op.get_bind())  # tickets created before this revision become searchable


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TABLE IF EXISTS {PostgresFtsIndex.table}")
        op.execute(f"DROP TEXT SEARCH CONFIGURATION IF EXISTS {PostgresFtsIndex.config}")
