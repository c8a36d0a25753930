"""One tier vocabulary: every component's tiers agree with service_kit/tiers.py.

A customer whose token says ``professional`` must be ``professional`` to the proxy, the desk, the flags
service, the business exporter, the demo data, the dashboards and the alert rules alike.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from demo import business_db
from exporters.business.analytics import CALCULATORS
from ratelimit_proxy.settings import default_tiers
from service_kit.tiers import DESK_TIERS, PAID_TIERS, STAFF_TIER, TIERS

ROOT = Path(__file__).resolve().parents[1]
TIER_LITERAL = re.compile(r"""tier\s*(?:=|!=|=~|!~)\s*\\?["']([^"'\\]+)""")


def yaml_file(relative: str) -> Any:
    return yaml.safe_load((ROOT / relative).read_text())


def test_the_vocabulary_is_the_platforms_four_tiers_plus_the_desks_staff_tier() -> None:
    assert TIERS == ("free", "startup", "professional", "enterprise")
    assert TIERS[1:] == PAID_TIERS
    assert (*TIERS, STAFF_TIER) == DESK_TIERS


def test_the_proxy_limits_every_tier_and_no_other() -> None:
    assert tuple(default_tiers()) == TIERS
    limits = yaml_file("config/ratelimit_proxy.yml")["limits"]
    assert tuple(limits["tiers"]) == TIERS
    assert limits["anonymous_tier"] in TIERS


def test_the_business_exporter_labels_are_the_platform_tiers() -> None:
    queries = yaml_file("config/exporters/business.yml")["queries"]
    tier_labels = {
        metric: spec["labels"]["tier"]
        for query in queries.values()
        for metric, spec in query.get("metrics", {}).items()
        if "tier" in spec.get("labels", {})
    }
    tier_labels |= {  # the computed queries' metrics are the calculators'
        metric: spec.labels["tier"]
        for calculator in CALCULATORS.values()
        for metric, spec in calculator.metrics.items()
        if "tier" in spec.labels
    }
    assert tier_labels["business_users"] == list(TIERS)
    assert tier_labels["business_mrr_usd"] == list(PAID_TIERS)
    assert tier_labels["business_arpu_usd"] == list(PAID_TIERS)
    assert all(set(values) <= set(TIERS) for values in tier_labels.values()), tier_labels


def test_the_demo_business_data_uses_the_platform_tiers() -> None:
    assert tuple(business_db.PRICES_USD) == PAID_TIERS
    assert set(business_db.NEXT_PLAN) | set(business_db.NEXT_PLAN.values()) <= set(TIERS)
    assert set(business_db.CONVERT_DAILY) <= set(TIERS)
    assert tuple(business_db.AI_REQUESTS_PER_ACTIVE_DAY) == TIERS
    assert set(business_db.TRIAL_PLANS) <= set(PAID_TIERS)
    assert set(business_db.PREVIOUS_PLAN) | set(business_db.PREVIOUS_PLAN.values()) <= set(PAID_TIERS)
    assert set(business_db.DOWNGRADE_DAILY) <= set(PAID_TIERS)


def _tier_literals(text: str) -> set[str]:
    values: set[str] = set()
    for match in TIER_LITERAL.finditer(text):
        values.update(part for part in match.group(1).split("|") if part and not part.startswith("$"))
    return values


def test_dashboards_and_alert_rules_name_only_platform_tiers() -> None:
    files = [*ROOT.glob("grafana/dashboards/*.json"), *ROOT.glob("alert_rules/**/*.yml")]
    assert files
    named = {path.relative_to(ROOT).as_posix(): _tier_literals(path.read_text()) for path in files}
    strangers = {path: sorted(values - set(TIERS)) for path, values in named.items() if values - set(TIERS)}
    assert strangers == {}
    assert set().union(*named.values()), "the scan found no tier at all: the pattern is broken"


def test_the_tier_scan_catches_an_old_name() -> None:
    assert _tier_literals('sum(business_mrr_usd{tier="pro"}) and rate(x{tier=~"free|starter"}[5m])') == {
        "pro",
        "free",
        "starter",
    }
    assert _tier_literals(json.dumps({"expr": 'x{tier="enterprise"}'})) == {"enterprise"}
