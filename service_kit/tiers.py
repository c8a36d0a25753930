"""The platform's one list of customer tiers, from its pricing: every component reads it from here.

The proxy's limits, the desk's SLA policies and customer field, the flags service's targeting and OFREP
contexts, the business exporter's labels, the demo data and the dashboards all use these names, and a test
(tests/test_tiers.py) checks that they agree. ``internal`` is not a plan: the desk marks its own staff's
and the platform's internal tickets with it.
"""

from __future__ import annotations

from typing import Literal, get_args

Tier = Literal["free", "startup", "professional", "enterprise"]
DeskTier = Literal["free", "startup", "professional", "enterprise", "internal"]

TIERS: tuple[str, ...] = get_args(Tier)
STAFF_TIER = "internal"
DESK_TIERS: tuple[str, ...] = get_args(DeskTier)
PAID_TIERS: tuple[str, ...] = TIERS[1:]


def unknown_tier_message(tiers: tuple[str, ...] = TIERS) -> str:
    return f"must be one of {', '.join(tiers)}"
