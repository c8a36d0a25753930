"""An index on tickets.merged_into_id: a ticket's thread reads the tickets merged into it by this column
(Desk.thread), and so does a merge re-pointing them; without it each read scanned every ticket

Partial (merged tickets only), on both backends: a whole index made SQLite pick it for every list's
`merged_into_id IS NULL`, which nearly every ticket matches, over the status and sort indexes.

Revision ID: tickets_0006
Revises: tickets_0005
"""

import sqlalchemy as sa
from alembic import op

revision = "tickets_0006"
down_revision = "tickets_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    merged = sa.text("merged_into_id IS NOT NULL")
    op.create_index(
        "ix_tickets_merged_into", "tickets", ["merged_into_id"], sqlite_where=merged, postgresql_where=merged
    )


def downgrade() -> None:
    op.drop_index("ix_tickets_merged_into", table_name="tickets")
