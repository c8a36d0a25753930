"""Flag and segment validation: every problem names its field."""

from __future__ import annotations

from typing import Any

import pytest

from flags_service.model import InvalidDocument, compile_flag, diff, prerequisite_cycle, validate_flag

ENVIRONMENTS = ("development", "production")


def _flag(**changes: Any) -> dict[str, Any]:
    flag: dict[str, Any] = {
        "key": "new-checkout",
        "type": "boolean",
        "variants": {"on": True, "off": False},
        "offVariant": "off",
    }
    flag.update(changes)
    return flag


def _rule(clause: dict[str, Any]) -> dict[str, Any]:
    return {"environments": {"production": {"rules": [{"clauses": [clause], "serve": {"variant": "on"}}]}}}


def test_defaults_fill_every_environment_off_with_key_as_salt() -> None:
    doc = validate_flag(_flag(), ENVIRONMENTS)
    assert doc["salt"] == "new-checkout"
    assert doc["bucketBy"] == "targetingKey"
    assert doc["kind"] == "release"
    assert set(doc["environments"]) == set(ENVIRONMENTS)
    assert doc["environments"]["production"] == {
        "enabled": False,
        "targets": [],
        "rules": [],
        "fallthrough": {"variant": "off"},
        "prerequisites": [],
    }


RULE = "environments.production.rules[0]"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"key": "Bad Key"}, "key", "should match pattern"),
        ({"type": "integer"}, "type", "Input should be 'boolean', 'string', 'number' or 'json'"),
        ({"variants": {}}, "variants", "at least 1 item"),
        ({"variants": {"on": 1, "off": False}}, "variants.on", "must be a boolean"),
        ({"offVariant": "nope"}, "offVariant", "one of the flag's variants"),
        ({"kind": "forever"}, "kind", "Input should be 'release'"),
        ({"expiresAt": "someday"}, "expiresAt", "RFC 3339"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"environments": {"qa": {}}}, "environments.qa", "unknown environment"),
        ({"environments": {"production": {"enabled": "yes"}}}, "environments.production.enabled", "boolean"),
        (
            {"environments": {"production": {"fallthrough": {"rollout": [{"variant": "on", "weight": 0}]}}}},
            "environments.production.fallthrough.rollout",
            "more than 0",
        ),
        (
            {"environments": {"production": {"fallthrough": {"rollout": [{"variant": "x", "weight": 5}]}}}},
            "environments.production.fallthrough.rollout[0].variant",
            "variants",
        ),
        (
            {"environments": {"production": {"targets": [{"variant": "on", "values": [1]}]}}},
            "environments.production.targets[0].values[0]",
            "valid string",
        ),
        (
            _rule({"attribute": "tier", "op": "like", "values": ["professional"]}),
            f"{RULE}.clauses[0].op",
            "Input should be 'in', 'notIn'",
        ),
        (
            _rule({"attribute": "tier", "op": "in", "values": []}),
            f"{RULE}.clauses[0].values",
            "at least 1 item",
        ),
        (
            _rule({"attribute": "tier", "op": "in", "values": ["gold"]}),
            f"{RULE}.clauses[0].values[0]",
            "must be one of free, startup, professional, enterprise",
        ),
        (_rule({"attribute": "age", "op": "gt", "values": ["10"]}), f"{RULE}.clauses[0].values[0]", "number"),
        (
            _rule({"attribute": "v", "op": "semverGt", "values": ["two"]}),
            f"{RULE}.clauses[0].values[0]",
            "semantic",
        ),
        (
            _rule({"attribute": "at", "op": "before", "values": ["soon"]}),
            f"{RULE}.clauses[0].values[0]",
            "RFC 3339",
        ),
        (
            _rule({"attribute": "e", "op": "matches", "values": ["(unclosed"]}),
            f"{RULE}.clauses[0].values[0]",
            "regular",
        ),
        (
            _rule({"attribute": "e", "op": "matches", "values": ["a" * 300]}),
            f"{RULE}.clauses[0].values[0]",
            "at most 256",
        ),
        (
            _rule({"op": "segmentMatch", "values": ["ghost"]}),
            f"{RULE}.clauses[0].values[0]",
            "no such segment",
        ),
        (
            _rule({"attribute": "e", "op": "matches", "values": ["(a)\\1"]}),
            f"{RULE}.clauses[0].values[0]",
            "not a valid RE2 regular expression",
        ),
        (
            _rule({"attribute": "e", "op": "matches", "values": ["^(?!admin)"]}),
            f"{RULE}.clauses[0].values[0]",
            "no backreferences or lookaround",
        ),
        (
            _rule({"attribute": "tier", "op": "in", "values": ["professional"], "negate": 1}),
            f"{RULE}.clauses[0].negate",
            "bool",
        ),
        (
            {"environments": {"production": {"prerequisites": [{"flag": "new-checkout", "variant": "on"}]}}},
            "environments.production.prerequisites[0].flag",
            "itself",
        ),
    ],
)
def test_invalid_flag_names_the_field(changes: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InvalidDocument) as caught:
        validate_flag(_flag(**changes), ENVIRONMENTS, segment_keys={})
    assert field in caught.value.details, caught.value.details
    assert message in caught.value.details[field]


def test_duplicate_rule_ids_are_refused() -> None:
    rule = {
        "id": "pro",
        "clauses": [{"attribute": "tier", "op": "in", "values": ["professional"]}],
        "serve": {"variant": "on"},
    }
    with pytest.raises(InvalidDocument) as caught:
        validate_flag(_flag(environments={"production": {"rules": [rule, rule]}}), ENVIRONMENTS)
    assert "environments.production.rules[1].id" in caught.value.details


def test_prerequisite_cycle_is_found_through_three_flags() -> None:
    def doc(key: str, requires: str) -> dict[str, Any]:
        return validate_flag(
            _flag(key=key, environments={"production": {"prerequisites": [{"flag": requires, "variant": "on"}]}}),
            ENVIRONMENTS,
        )

    flags = {"a": doc("a", "b"), "b": doc("b", "c"), "c": doc("c", "a")}
    assert prerequisite_cycle(flags, "production") == ["a", "b", "c", "a"]
    assert prerequisite_cycle(flags, "development") is None
    flags["c"] = validate_flag(_flag(key="c"), ENVIRONMENTS)
    assert prerequisite_cycle(flags, "production") is None


def test_compile_keeps_only_scalar_metadata_and_the_environment_state() -> None:
    doc = validate_flag(_flag(owner="growth", tags=["checkout"]), ENVIRONMENTS)
    compiled = compile_flag(doc, "production")
    assert compiled["metadata"] == {"kind": "release", "owner": "growth"}
    assert compiled["enabled"] is False
    assert "environments" not in compiled


def test_diff_lists_changed_paths() -> None:
    before = {"a": 1, "env": {"production": {"enabled": False}}}
    after = {"a": 1, "env": {"production": {"enabled": True}}, "b": [1]}
    assert diff(before, after) == [
        {"path": "b", "before": None, "after": [1]},
        {"path": "env.production.enabled", "before": False, "after": True},
    ]


@pytest.mark.parametrize("op", ["in", "notIn", "equals"])
def test_the_old_tier_name_pro_is_refused_in_tier_clauses(op: str) -> None:
    with pytest.raises(InvalidDocument) as caught:
        validate_flag(_flag(**_rule({"attribute": "tier", "op": op, "values": ["free", "pro"]})), ENVIRONMENTS)
    assert caught.value.details == {
        f"{RULE}.clauses[0].values[1]": "must be one of free, startup, professional, enterprise"
    }
