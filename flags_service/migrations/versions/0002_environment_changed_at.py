"""When each environment's snapshot last changed, for flags_last_change_timestamp_seconds (flag-change
annotations on the dashboards). Null until the first change after this migration.

Revision ID: flags_0002
Revises: flags_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "flags_0002"
down_revision = "flags_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flags_environments") as batch:
        batch.add_column(sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("flags_environments") as batch:
        batch.drop_column("changed_at")
