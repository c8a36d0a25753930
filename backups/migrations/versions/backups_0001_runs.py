"""Backup and drill runs

Revision ID: backups_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "backups_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backup_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_backup_runs_store_kind_finished", "backup_runs", ["store", "kind", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_backup_runs_store_kind_finished", table_name="backup_runs")
    op.drop_table("backup_runs")
