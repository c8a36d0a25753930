"""tickets.sla_due_at: the earliest SLA deadline, stored so the desk's queue sorts by it and its views
(at risk, breached) count by one column instead of three

Existing tickets get the earliest of their three stored deadlines; the next change of a ticket recomputes
it with the rest (Desk.refresh).

Revision ID: tickets_0005
Revises: tickets_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "tickets_0005"
down_revision = "tickets_0004"
branch_labels = None
depends_on = None

tickets = sa.table(
    "tickets",
    sa.column("sla_due_at", sa.DateTime),
    sa.column("first_response_due_at", sa.DateTime),
    sa.column("next_response_due_at", sa.DateTime),
    sa.column("resolution_due_at", sa.DateTime),
)


def _earliest(*dues: sa.ColumnElement[sa.DateTime]) -> sa.ColumnElement[sa.DateTime]:
    """The smallest non-null value, in SQL both backends speak (SQLite's min() and PostgreSQL's least()
    differ on NULL)."""
    first, *rest = dues
    if not rest:
        return first
    later = _earliest(*rest)
    return sa.case((later.is_(None), first), (first.is_(None), later), (first <= later, first), else_=later)


def upgrade() -> None:
    op.add_column("tickets", sa.Column("sla_due_at", sa.DateTime(), nullable=True))
    c = tickets.c
    earliest = _earliest(c.first_response_due_at, c.next_response_due_at, c.resolution_due_at)
    op.execute(tickets.update().values(sla_due_at=earliest))


def downgrade() -> None:
    # In place (SQLite 3.35+ drops a column itself): batch mode's copy of tickets would cascade its drop to
    # every message and event (tickets_0004).
    op.drop_column("tickets", "sla_due_at")
