"""Demo flags for ``make up``: a rollout, a tier-targeted flag, an A/B experiment and a value flag."""

from __future__ import annotations

import getpass
from typing import Any

from sqlalchemy.orm import Session

from flags_service.app import MIGRATIONS
from flags_service.settings import FlagsSettings
from flags_service.storage.environments import EnvironmentStore
from flags_service.storage.flags import FlagStore
from flags_service.storage.sdk_keys import SdkKeyStore
from flags_service.storage.tables import metadata
from service_kit.auth import AuditRecord
from service_kit.db import make_engine, upgrade
from service_kit.tiers import PAID_TIERS

PAID = {"attribute": "tier", "op": "in", "values": list(PAID_TIERS)}


def _everywhere(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {env: state for env in ("development", "staging", "production")}


DEMO_FLAGS: list[dict[str, Any]] = [
    {
        "key": "new-checkout",
        "description": "The redesigned checkout, rolled out gradually.",
        "owner": "payments",
        "kind": "release",
        "clientVisible": True,
        "variants": {"on": True, "off": False},
        "offVariant": "off",
        "environments": _everywhere(
            {
                "enabled": True,
                "fallthrough": {"rollout": [{"variant": "on", "weight": 2500}, {"variant": "off", "weight": 7500}]},
            }
        ),
    },
    {
        "key": "ai-summaries",
        "description": "AI ticket summaries for paying tiers.",
        "owner": "ai-platform",
        "kind": "permission",
        "clientVisible": True,
        "variants": {"on": True, "off": False},
        "offVariant": "off",
        "environments": _everywhere(
            {"enabled": True, "rules": [{"id": "paid-tiers", "clauses": [PAID], "serve": {"variant": "on"}}]}
        ),
    },
    {
        "key": "pricing-page-experiment",
        "type": "string",
        "description": "A/B test of the pricing page layout.",
        "owner": "growth",
        "kind": "experiment",
        "clientVisible": True,
        "variants": {"control": "classic", "treatment": "cards"},
        "offVariant": "control",
        "environments": _everywhere(
            {
                "enabled": True,
                "fallthrough": {
                    "rollout": [{"variant": "control", "weight": 50}, {"variant": "treatment", "weight": 50}]
                },
            }
        ),
    },
    {
        "key": "upload-limit-mb",
        "type": "number",
        "description": "Largest attachment upload per tier, in megabytes.",
        "owner": "platform",
        "kind": "ops",
        "variants": {"small": 25, "medium": 100, "large": 500},
        "offVariant": "small",
        "environments": _everywhere(
            {
                "enabled": True,
                "rules": [
                    {
                        "id": "enterprise",
                        "clauses": [{"attribute": "tier", "op": "equals", "values": ["enterprise"]}],
                        "serve": {"variant": "large"},
                    },
                    {
                        "id": "professional",
                        "clauses": [{"attribute": "tier", "op": "equals", "values": ["professional"]}],
                        "serve": {"variant": "medium"},
                    },
                ],
            }
        ),
    },
]


def seed(settings: FlagsSettings) -> tuple[list[str], dict[str, str]]:
    """Create missing demo flags (audited as the CLI user) and, on a fresh database, two development keys."""
    engine = make_engine(settings.database.url)
    upgrade(engine, MIGRATIONS, metadata)
    actor = f"cli:{getpass.getuser()}"
    created: list[str] = []
    keys: dict[str, str] = {}
    with Session(engine) as session:
        EnvironmentStore(session, settings.flags.environments).ensure_environments()
        store, key_store = (
            FlagStore(session, settings.flags.environments),
            SdkKeyStore(session, settings.flags.environments),
        )
        existing = {flag["key"] for flag in store.list_flags()}
        for document in DEMO_FLAGS:
            if document["key"] in existing:
                continue
            change = store.create_flag(document, actor)
            session.add(
                AuditRecord(
                    actor=actor,
                    actor_role="admin",
                    action="flag.create",
                    target_type="flag",
                    target_id=change.key,
                    before=None,
                    after=change.after,
                )
            )
            created.append(change.key)
        if not key_store.list_sdk_keys():
            for kind in ("server", "client"):
                _, token = key_store.create_sdk_key("development", kind, f"demo {kind} key")
                keys[kind] = token
        session.commit()
    engine.dispose()
    return created, keys
