"""The stored flag and segment documents: validation (errors name the field) and compilation per environment.

A flag document is what the admin API reads and writes. Definition fields are shared by all environments;
``environments`` holds each environment's own state (on/off, targets, rules, fallthrough, prerequisites).
``compile_flag(document, environment)`` produces the plain engine shape ``flags_service.engine`` evaluates.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

import re2

from flags_service.bucketing import MAX_TOTAL_WEIGHT
from flags_service.engine import (
    ALL_OPERATORS,
    MAX_REGEX_PATTERN,
    SEGMENT_MATCH,
    TARGETING_KEY,
    compile_regex,
    parse_date,
    parse_semver,
)

FLAG_TYPES = ("boolean", "string", "number", "json")
FLAG_KINDS = ("release", "experiment", "ops", "permission")
KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ATTRIBUTE_PATTERN = re.compile(r"^[A-Za-z_$][A-Za-z0-9_.$-]{0,99}$")
MAX_TARGET_IDS = 10_000
MAX_RULES = 200
DEFINITION_FIELDS = {
    "key",
    "type",
    "description",
    "owner",
    "tags",
    "kind",
    "expiresAt",
    "variants",
    "offVariant",
    "salt",
    "bucketBy",
    "clientVisible",
    "environments",
}
STATE_FIELDS = {"enabled", "targets", "rules", "fallthrough", "prerequisites"}
SEGMENT_FIELDS = {"key", "name", "description", "included", "excluded", "clauses"}
TIER_OPERATORS = {"in", "notIn", "equals"}


class InvalidDocument(ValueError):
    """A document failed validation; ``errors`` maps each field path to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_VALUE_CHECKS = {
    "boolean": (lambda v: isinstance(v, bool), "a boolean"),
    "string": (lambda v: isinstance(v, str), "a string"),
    "number": (_is_number, "a number"),
    "json": (lambda v: isinstance(v, dict | list), "a JSON object or array"),
}


class _Checker:
    """Collects every problem of a document at once, keyed by a dotted field path."""

    def __init__(self, tiers: Iterable[str], segment_keys: Iterable[str] | None) -> None:
        self.errors: dict[str, str] = {}
        self.tiers = frozenset(tiers)
        self.segment_keys = None if segment_keys is None else frozenset(segment_keys)

    def fail(self, path: str, message: str) -> None:
        self.errors.setdefault(path, message)

    def unknown_fields(self, document: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
        for name in sorted(set(document) - allowed):
            self.fail(f"{prefix}{name}", "unknown field")

    def string(self, value: object, path: str, *, pattern: re.Pattern[str] | None = None, limit: int = 200) -> bool:
        if not isinstance(value, str) or not value:
            self.fail(path, "must be a non-empty string")
        elif len(value) > limit:
            self.fail(path, f"must be at most {limit} characters")
        elif pattern is not None and not pattern.match(value):
            self.fail(path, f"must match {pattern.pattern}")
        else:
            return True
        return False

    def list_of(self, value: object, path: str, *, non_empty: bool = False, limit: int = 1000) -> list[Any]:
        if not isinstance(value, list):
            self.fail(path, "must be a list")
            return []
        if non_empty and not value:
            self.fail(path, "must not be empty")
        if len(value) > limit:
            self.fail(path, f"must have at most {limit} items")
        return value

    def serve(self, serve: object, variants: Mapping[str, Any], path: str) -> None:
        if not isinstance(serve, dict) or len(serve) != 1 or not {"variant", "rollout"} & set(serve):
            self.fail(path, 'must be {"variant": name} or {"rollout": [{"variant", "weight"}, ...]}')
            return
        if "variant" in serve:
            if serve["variant"] not in variants:
                self.fail(f"{path}.variant", "must name one of the flag's variants")
            return
        total = 0
        for index, part in enumerate(self.list_of(serve["rollout"], f"{path}.rollout", non_empty=True)):
            part_path = f"{path}.rollout[{index}]"
            if not isinstance(part, dict) or set(part) != {"variant", "weight"}:
                self.fail(part_path, 'must be {"variant": name, "weight": integer}')
                continue
            if part["variant"] not in variants:
                self.fail(f"{part_path}.variant", "must name one of the flag's variants")
            weight = part["weight"]
            if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
                self.fail(f"{part_path}.weight", "must be a non-negative integer")
            else:
                total += weight
        if total <= 0:
            self.fail(f"{path}.rollout", "weights must add up to more than 0")
        elif total > MAX_TOTAL_WEIGHT:
            self.fail(f"{path}.rollout", f"weights must add up to at most {MAX_TOTAL_WEIGHT}")

    def clause(self, clause: object, path: str, *, allow_segments: bool) -> None:
        if not isinstance(clause, dict):
            self.fail(path, "must be an object")
            return
        self.unknown_fields(clause, {"attribute", "op", "values", "negate"}, f"{path}.")
        op = clause.get("op")
        if op not in ALL_OPERATORS or (op == SEGMENT_MATCH and not allow_segments):
            allowed = sorted(ALL_OPERATORS - (set() if allow_segments else {SEGMENT_MATCH}))
            self.fail(f"{path}.op", f"must be one of {', '.join(allowed)}")
            return
        attribute = clause.setdefault("attribute", TARGETING_KEY)
        self.string(attribute, f"{path}.attribute", pattern=ATTRIBUTE_PATTERN)
        if not isinstance(clause.get("negate", False), bool):
            self.fail(f"{path}.negate", "must be a boolean")
        values = self.list_of(clause.get("values"), f"{path}.values", non_empty=True)
        for index, value in enumerate(values):
            message = self._clause_value_problem(op, attribute, value)
            if message:
                self.fail(f"{path}.values[{index}]", message)
                break

    def _clause_value_problem(self, op: str, attribute: object, value: object) -> str | None:
        if op in {"lt", "lte", "gt", "gte"} and not _is_number(value):
            return "must be a number"
        if op.startswith("semver") and (not isinstance(value, str) or parse_semver(value) is None):
            return "must be a semantic version like 2.1.0"
        if op in {"before", "after"} and parse_date(value) is None:
            return "must be an RFC 3339 date or Unix seconds"
        if op in {"contains", "startsWith", "endsWith"} and not isinstance(value, str):
            return "must be a string"
        if op == "matches":
            return _regex_problem(value)
        if op == SEGMENT_MATCH:
            if self.segment_keys is not None and value not in self.segment_keys:
                return "no such segment in this environment"
        elif attribute == "tier" and op in TIER_OPERATORS and self.tiers and value not in self.tiers:
            return f"must be a known tier ({', '.join(sorted(self.tiers))})"
        if isinstance(value, dict | list):
            return "must be a string, number or boolean"
        return None


def _regex_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty regular expression"
    if len(value) > MAX_REGEX_PATTERN:
        return f"must be at most {MAX_REGEX_PATTERN} characters"
    try:
        compile_regex(value)
    except re2.error as error:
        reason = error.args[0].decode() if isinstance(error.args[0], bytes) else str(error.args[0])
        return f"is not a valid RE2 regular expression (no backreferences or lookaround): {reason}"
    return None


def default_state(off_variant: str) -> dict[str, Any]:
    """A new environment starts off, serving the off variant to everyone."""
    return {
        "enabled": False,
        "targets": [],
        "rules": [],
        "fallthrough": {"variant": off_variant},
        "prerequisites": [],
    }


def validate_flag(
    document: object,
    environments: Iterable[str],
    *,
    tiers: Iterable[str] = (),
    segment_keys: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, Any]:
    """Return the normalised flag document (defaults filled in) or raise ``InvalidDocument``."""
    environments = list(environments)
    if not isinstance(document, dict):
        raise InvalidDocument({"body": "must be a JSON object"})
    doc = copy.deepcopy(document)
    doc.pop("version", None)
    check = _Checker(tiers, None)
    check.unknown_fields(doc, DEFINITION_FIELDS, "")
    check.string(doc.get("key"), "key", pattern=KEY_PATTERN)
    flag_type = doc.setdefault("type", "boolean")
    if flag_type not in FLAG_TYPES:
        check.fail("type", f"must be one of {', '.join(FLAG_TYPES)}")
    for name in ("description", "owner"):
        if not isinstance(doc.setdefault(name, ""), str) or len(doc[name]) > 2000:
            check.fail(name, "must be a string of at most 2000 characters")
    tags = check.list_of(doc.setdefault("tags", []), "tags", limit=50)
    if any(not isinstance(tag, str) or not tag for tag in tags):
        check.fail("tags", "must be a list of non-empty strings")
    if doc.setdefault("kind", "release") not in FLAG_KINDS:
        check.fail("kind", f"must be one of {', '.join(FLAG_KINDS)}")
    expires = doc.setdefault("expiresAt", None)
    if expires is not None and (not isinstance(expires, str) or parse_date(expires) is None):
        check.fail("expiresAt", "must be an RFC 3339 date or null")
    if not isinstance(doc.setdefault("clientVisible", False), bool):
        check.fail("clientVisible", "must be a boolean")
    if isinstance(doc.get("key"), str):
        check.string(doc.setdefault("salt", doc["key"]), "salt")
    check.string(doc.setdefault("bucketBy", TARGETING_KEY), "bucketBy", pattern=ATTRIBUTE_PATTERN)

    variants = doc.get("variants")
    if not isinstance(variants, dict) or not variants:
        check.fail("variants", "must be a non-empty object of variant name to value")
        variants = {}
    elif len(variants) > 100:
        check.fail("variants", "must have at most 100 variants")
    value_check, type_name = _VALUE_CHECKS.get(flag_type, _VALUE_CHECKS["json"])
    for name, value in variants.items():
        if not NAME_PATTERN.match(name):
            check.fail(f"variants.{name}", f"variant names must match {NAME_PATTERN.pattern}")
        elif flag_type == "json" and value is None:
            check.fail(f"variants.{name}", "must not be null")
        elif flag_type != "json" and not value_check(value):
            check.fail(f"variants.{name}", f"must be {type_name} for a {flag_type} flag")
    off_variant = doc.get("offVariant")
    if off_variant not in variants:
        check.fail("offVariant", "must name one of the flag's variants")
        off_variant = next(iter(variants), "off")

    states = doc.setdefault("environments", {})
    if not isinstance(states, dict):
        check.fail("environments", "must be an object of environment name to state")
        states = doc["environments"] = {}
    for name in sorted(set(states) - set(environments)):
        check.fail(f"environments.{name}", f"unknown environment (known: {', '.join(environments)})")
    for env in environments:
        state = states.get(env, {})
        if isinstance(state, dict):  # fields an environment leaves out take their defaults
            state = states[env] = {**default_state(str(off_variant)), **state}
        check.segment_keys = None if segment_keys is None else frozenset(segment_keys.get(env, ()))
        _check_state(check, state, variants, doc.get("key"), f"environments.{env}")
    if check.errors:
        raise InvalidDocument(check.errors)
    return doc


def _check_state(check: _Checker, state: object, variants: Mapping[str, Any], key: object, path: str) -> None:
    if not isinstance(state, dict):
        check.fail(path, "must be an object")
        return
    check.unknown_fields(state, STATE_FIELDS, f"{path}.")
    if not isinstance(state.setdefault("enabled", False), bool):
        check.fail(f"{path}.enabled", "must be a boolean")
    for index, target in enumerate(check.list_of(state.setdefault("targets", []), f"{path}.targets")):
        target_path = f"{path}.targets[{index}]"
        if not isinstance(target, dict) or set(target) != {"variant", "values"}:
            check.fail(target_path, 'must be {"variant": name, "values": [ids]}')
            continue
        if target["variant"] not in variants:
            check.fail(f"{target_path}.variant", "must name one of the flag's variants")
        ids = check.list_of(target["values"], f"{target_path}.values", limit=MAX_TARGET_IDS)
        if any(not isinstance(value, str) for value in ids):
            check.fail(f"{target_path}.values", "must be a list of strings")
    rule_ids: set[str] = set()
    for index, rule in enumerate(check.list_of(state.setdefault("rules", []), f"{path}.rules", limit=MAX_RULES)):
        rule_path = f"{path}.rules[{index}]"
        if not isinstance(rule, dict):
            check.fail(rule_path, "must be an object")
            continue
        check.unknown_fields(rule, {"id", "description", "clauses", "serve"}, f"{rule_path}.")
        rule_id = rule.setdefault("id", f"rule-{index + 1}")
        if check.string(rule_id, f"{rule_path}.id", pattern=NAME_PATTERN) and rule_id in rule_ids:
            check.fail(f"{rule_path}.id", "must be unique within the environment")
        rule_ids.add(str(rule_id))
        for clause_index, clause in enumerate(
            check.list_of(rule.get("clauses"), f"{rule_path}.clauses", non_empty=True)
        ):
            check.clause(clause, f"{rule_path}.clauses[{clause_index}]", allow_segments=True)
        check.serve(rule.get("serve"), variants, f"{rule_path}.serve")
    check.serve(state.get("fallthrough"), variants, f"{path}.fallthrough")
    for index, prerequisite in enumerate(check.list_of(state.setdefault("prerequisites", []), f"{path}.prerequisites")):
        pre_path = f"{path}.prerequisites[{index}]"
        if not isinstance(prerequisite, dict) or set(prerequisite) != {"flag", "variant"}:
            check.fail(pre_path, 'must be {"flag": key, "variant": name}')
        elif prerequisite["flag"] == key:
            check.fail(f"{pre_path}.flag", "a flag cannot require itself")


def validate_segment(document: object, *, tiers: Iterable[str] = ()) -> dict[str, Any]:
    """Return the normalised segment document or raise ``InvalidDocument``."""
    if not isinstance(document, dict):
        raise InvalidDocument({"body": "must be a JSON object"})
    doc = copy.deepcopy(document)
    doc.pop("version", None)
    doc.pop("environment", None)
    check = _Checker(tiers, None)
    check.unknown_fields(doc, SEGMENT_FIELDS, "")
    check.string(doc.get("key"), "key", pattern=KEY_PATTERN)
    for name in ("name", "description"):
        if not isinstance(doc.setdefault(name, ""), str):
            check.fail(name, "must be a string")
    for name in ("included", "excluded"):
        ids = check.list_of(doc.setdefault(name, []), name, limit=MAX_TARGET_IDS)
        if any(not isinstance(value, str) for value in ids):
            check.fail(name, "must be a list of strings")
    for index, clause in enumerate(check.list_of(doc.setdefault("clauses", []), "clauses")):
        check.clause(clause, f"clauses[{index}]", allow_segments=False)
    if check.errors:
        raise InvalidDocument(check.errors)
    return doc


def prerequisite_cycle(flags: Mapping[str, Mapping[str, Any]], environment: str) -> list[str] | None:
    """The first prerequisite cycle among ``flags`` in ``environment`` as a key path, or ``None``."""
    graph = {key: [p["flag"] for p in state_of(doc, environment)["prerequisites"]] for key, doc in flags.items()}
    done: set[str] = set()

    def visit(key: str, path: list[str]) -> list[str] | None:
        if key in path:
            return [*path[path.index(key) :], key]
        if key in done or key not in graph:
            return None
        for required in graph[key]:
            cycle = visit(required, [*path, key])
            if cycle:
                return cycle
        done.add(key)
        return None

    for key in graph:
        cycle = visit(key, [])
        if cycle:
            return cycle
    return None


def state_of(document: Mapping[str, Any], environment: str) -> dict[str, Any]:
    """A flag's state in ``environment``; an environment added to the config after the flag was saved
    starts off, like a new flag."""
    state = document["environments"].get(environment)
    return dict(state) if state is not None else default_state(document["offVariant"])


def compile_flag(document: Mapping[str, Any], environment: str) -> dict[str, Any]:
    """The engine shape of one flag in one environment (metadata limited to what OFREP may carry)."""
    state = state_of(document, environment)
    metadata = {"kind": document["kind"]}
    if document.get("owner"):
        metadata["owner"] = document["owner"]
    return {
        "key": document["key"],
        "type": document["type"],
        "variants": document["variants"],
        "offVariant": document["offVariant"],
        "salt": document.get("salt") or document["key"],
        "bucketBy": document.get("bucketBy") or TARGETING_KEY,
        "clientVisible": document.get("clientVisible", False),
        "metadata": metadata,
        **state,
    }


def compile_segment(document: Mapping[str, Any]) -> dict[str, Any]:
    return {key: document[key] for key in ("key", "included", "excluded", "clauses")}


def diff(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """A flat list of ``{"path", "before", "after"}`` changes between two JSON documents."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes = []
        for key in sorted(set(before) | set(after), key=str):
            child = f"{path}.{key}" if path else str(key)
            changes.extend(diff(before.get(key), after.get(key), child))
        return changes
    if before == after and type(before) is type(after):
        return []
    return [{"path": path or "$", "before": before, "after": after}]
