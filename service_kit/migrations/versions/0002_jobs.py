"""The schedule of periodic jobs shared by every replica (service_kit/jobs.py).

Revision ID: kit_0002
Revises: kit_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "kit_0002"
down_revision = "kit_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_kit_jobs",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("next_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_runner", sa.String(200), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("service_kit_jobs")
