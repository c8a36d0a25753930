"""PostgreSQL: window marks stored with each search row, so the database cuts a one-word snippet's window

A one-word search's snippets were headlined from windows that Python cut out of each page ticket's texts:
the texts went to the app and came back (a statement each way, 60 kB for a page of 20 in the bench
corpus). ticket_search now keeps, per row, marks of where the subject's and public thread's chunks begin
and how many tokens surely lie before them (tickets_app.headline_window), and `ticket_search_window` cuts
the window in the snippet statement itself.

Existing rows are marked here, 1,000 at a time (their texts read and the marks written back). Rows keep
working unmarked meanwhile, and so does a row a replica of the previous release writes during a rolling
release: marks are used only while the texts hash to what they were made from, else the whole text is
headlined, as before windows. SQLite databases are left as they are.

Revision ID: tickets_0008
Revises: tickets_0007
"""

from alembic import op

from tickets_app.search import PostgresFtsIndex

revision = "tickets_0008"
down_revision = "tickets_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        index = PostgresFtsIndex()
        index.create_window(op.get_bind())
        index.mark_unmarked(op.get_bind())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS ticket_search_window")
        op.execute(
            f"ALTER TABLE {PostgresFtsIndex.table} DROP COLUMN IF EXISTS window_marks, "
            "DROP COLUMN IF EXISTS window_marks_md5"
        )
