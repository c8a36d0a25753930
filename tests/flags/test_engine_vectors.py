"""The engine against the language-neutral vectors in tests/vectors/flags (one param per case)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flags_service.engine import evaluate

VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors" / "flags"


def _cases() -> list[Any]:
    params = []
    for path in sorted(VECTOR_DIR.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        for case in document["cases"]:
            params.append(pytest.param(document, case, id=f"{path.stem}:{case['name']}"))
    return params


def test_vector_directory_has_cases_for_every_operator() -> None:
    operators = {
        clause["op"]
        for path in VECTOR_DIR.glob("*.json")
        for rule in json.loads(path.read_text(encoding="utf-8"))["flag"].get("rules", [])
        for clause in rule["clauses"]
    }
    from flags_service.engine import ALL_OPERATORS

    assert operators == set(ALL_OPERATORS)


@pytest.mark.parametrize(("document", "case"), _cases())
def test_engine_matches_vector(document: dict[str, Any], case: dict[str, Any]) -> None:
    result = evaluate(document["flag"], case["context"], document.get("segments"), document.get("flags"))
    assert result.to_dict() == case["expected"]


@pytest.mark.parametrize(("document", "case"), _cases())
def test_result_depends_only_on_the_context_attributes_the_engine_reports(
    document: dict[str, Any], case: dict[str, Any]
) -> None:
    """What OFREP memoises by: evaluating with only the reported attributes changes nothing."""
    from flags_service.engine import context_attributes

    flag, flags, segments = document["flag"], document.get("flags"), document.get("segments")
    attributes = context_attributes(flag, flags)
    if attributes is None:
        reads_users = flag.get("targets") or any(
            "rollout" in serve for serve in [flag["fallthrough"], *(rule["serve"] for rule in flag.get("rules", []))]
        )
        reads_users = reads_users or any(
            clause["op"] == "segmentMatch" or clause.get("attribute", "targetingKey") == "targetingKey"
            for rule in flag.get("rules", [])
            for clause in rule["clauses"]
        )
        assert reads_users or flag.get("prerequisites"), "None only for flags that read per-user data"
        return
    reduced = {name: value for name, value in case["context"].items() if name in attributes}
    assert evaluate(flag, reduced, segments, flags) == evaluate(flag, case["context"], segments, flags)


def test_context_attributes_examples() -> None:
    from flags_service.engine import context_attributes

    base = {"key": "f", "enabled": True, "variants": {"on": True, "off": False}, "offVariant": "off"}
    tier_rule = {
        "id": "r",
        "clauses": [{"attribute": "tier", "op": "in", "values": ["professional"]}],
        "serve": {"variant": "on"},
    }
    assert context_attributes({**base, "fallthrough": {"variant": "on"}}) == frozenset()
    assert (
        context_attributes({**base, "enabled": False, "targets": [{"variant": "on", "values": ["u"]}]}) == frozenset()
    )
    assert context_attributes({**base, "rules": [tier_rule], "fallthrough": {"variant": "off"}}) == {"tier"}
    rollout = {"rollout": [{"variant": "on", "weight": 1}]}
    assert context_attributes({**base, "rules": [tier_rule], "fallthrough": rollout}) is None
    assert (
        context_attributes({**base, "targets": [{"variant": "on", "values": ["u"]}], "fallthrough": {"variant": "off"}})
        is None
    )
    parent = {**base, "key": "p", "rules": [tier_rule], "fallthrough": {"variant": "off"}}
    child = {**base, "key": "c", "prerequisites": [{"flag": "p", "variant": "on"}], "fallthrough": {"variant": "on"}}
    assert context_attributes(child, {"p": parent}) == {"tier"}
