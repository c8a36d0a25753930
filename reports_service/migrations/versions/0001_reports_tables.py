"""Saved reports, their schedules, and runs with the rendered PDFs.

Revision ID: reports_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "reports_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reports_saved",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("shared_with", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reports_saved_owner", "reports_saved", ["owner"])
    op.create_table(
        "reports_schedules",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("report_id", sa.Integer, sa.ForeignKey("reports_saved.id", ondelete="CASCADE"), nullable=False),
        sa.Column("cron", sa.String(100), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("recipients", sa.JSON, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("skipped_runs", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reports_schedules_report_id", "reports_schedules", ["report_id"])
    op.create_index("ix_reports_schedules_due", "reports_schedules", ["enabled", "next_run_at"])
    op.create_table(
        "reports_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("schedule_id", sa.Integer, sa.ForeignKey("reports_schedules.id", ondelete="SET NULL"), nullable=True),
        sa.Column("report_id", sa.Integer, sa.ForeignKey("reports_saved.id", ondelete="CASCADE"), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("delivered_to", sa.JSON, nullable=False),
        sa.Column("pdf", sa.LargeBinary, nullable=True),
        sa.Column("pdf_bytes", sa.Integer, nullable=True),
        sa.Column("render_seconds", sa.Float, nullable=True),
        sa.UniqueConstraint("schedule_id", "scheduled_for", name="uq_reports_runs_occurrence"),
    )
    op.create_index("ix_reports_runs_report_id", "reports_runs", ["report_id"])
    op.create_index("ix_reports_runs_schedule", "reports_runs", ["schedule_id", "id"])


def downgrade() -> None:
    op.drop_table("reports_runs")
    op.drop_table("reports_schedules")
    op.drop_table("reports_saved")
