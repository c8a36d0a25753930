"""The platform's tier names (service_kit.tiers): starter becomes startup and pro becomes professional in
tickets, in SLA policy conditions and in the desk's API tokens; a ticket's customer may have no tier.

Revision ID: tickets_0004
Revises: tickets_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "tickets_0004"
down_revision = "tickets_0003"
branch_labels = None
depends_on = None

RENAMED = {"starter": "startup", "pro": "professional"}
policies = sa.table("sla_policies", sa.column("id", sa.Integer), sa.column("definition", sa.JSON))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot drop a NOT NULL in place, and batch mode's copy-and-drop of tickets would cascade
        # the drop to every message and event (foreign keys are on): a new column takes the values instead.
        op.execute("ALTER TABLE tickets ADD COLUMN customer_plan VARCHAR(20)")
        op.execute("UPDATE tickets SET customer_plan = customer_tier")
        op.execute("ALTER TABLE tickets DROP COLUMN customer_tier")
        op.execute("ALTER TABLE tickets RENAME COLUMN customer_plan TO customer_tier")
    else:
        op.alter_column("tickets", "customer_tier", existing_type=sa.String(20), nullable=True)
    _rename(RENAMED)


def downgrade() -> None:
    _rename({new: old for old, new in RENAMED.items()})
    op.execute("UPDATE tickets SET customer_tier = 'free' WHERE customer_tier IS NULL")  # the old default
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("tickets", "customer_tier", existing_type=sa.String(20), nullable=False)


def _rename(names: dict[str, str]) -> None:
    for old, new in names.items():
        for statement in (
            "UPDATE tickets SET customer_tier = :new WHERE customer_tier = :old",
            "UPDATE api_tokens SET tier = :new WHERE tier = :old",
        ):
            op.execute(sa.text(statement).bindparams(old=old, new=new))
    bind = op.get_bind()
    for policy_id, definition in bind.execute(sa.select(policies.c.id, policies.c.definition)).all():
        tiers = (definition.get("conditions") or {}).get("tier")
        if tiers and set(tiers) & names.keys():
            conditions = {**definition["conditions"], "tier": [names.get(tier, tier) for tier in tiers]}
            renamed = {**definition, "conditions": conditions}
            bind.execute(policies.update().where(policies.c.id == policy_id).values(definition=renamed))
