"""alert_states: the newest firing of each alert per group, so stale webhook notifications are ignored

Revision ID: tickets_0003
Revises: tickets_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "tickets_0003"
down_revision = "tickets_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_states",
        sa.Column("group_key", sa.String(length=500), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("group_key", "fingerprint"),
    )


def downgrade() -> None:
    op.drop_table("alert_states")
