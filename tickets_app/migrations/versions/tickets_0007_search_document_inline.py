"""PostgreSQL: the search document (tsvector) kept inline in ticket_search's rows, not in its TOAST table

A ticket's tsvector (2.3 kB on average in the 100k-ticket bench corpus) went to the TOAST table, so every
match that is ranked, rechecked or counted fetched it from there: 13 µs a row against 2.8 µs inline
(measured on 20,000 of those rows).
STORAGE MAIN keeps it in the row when the row fits a page, and moves it out only when it cannot.

Existing rows move when they are written again: an UPDATE of every row recomputes the generated document
(3 minutes with VACUUM ANALYZE at 100k tickets on a loaded 2-core host). It locks rows, not the table:
searches go on reading the old versions meanwhile (TRUNCATE and refill, as `rebuild_all` does, would
hold the table's exclusive lock), but a ticket change waits for the migration to commit, since its
reindex writes the same row. The old versions are left to autovacuum. SQLite databases are left as
they are.

Revision ID: tickets_0007
Revises: tickets_0006
"""

from alembic import op

from tickets_app.search import PostgresFtsIndex

revision = "tickets_0007"
down_revision = "tickets_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {PostgresFtsIndex.table} ALTER COLUMN document SET STORAGE MAIN")
        op.execute(f"UPDATE {PostgresFtsIndex.table} SET subject = subject")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {PostgresFtsIndex.table} ALTER COLUMN document SET STORAGE EXTENDED")
