"""The flag and segment documents: one pydantic declaration each (it validates the admin API's bodies and
is their schema in ``/openapi.json``), the checks across fields a schema cannot state, and compilation.

A flag document is what the admin API reads and writes. Definition fields are shared by all environments;
``environments`` holds each environment's own state (on/off, targets, rules, fallthrough, prerequisites).
The models check each field on its own; ``validate_flag`` then checks what depends on other fields or on
the configuration (variants named by serves, values by operator, tiers, segments, environments), every
problem keyed by its field path like ``environments.production.rules[0].clauses[1].values[0]``.
``compile_flag(document, environment)`` produces the plain engine shape ``flags_service.engine`` evaluates.
Field names are camelCase because they are the engine's and the test vectors' language-neutral shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import pydantic
import re2
from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_serializer

from flags_service.bucketing import MAX_TOTAL_WEIGHT
from flags_service.engine import (
    MAX_REGEX_PATTERN,
    SEGMENT_MATCH,
    TARGETING_KEY,
    compile_regex,
    parse_date,
    parse_semver,
)
from service_kit.errors import ValidationError
from service_kit.openapi import JsonInt, Strict, validation_details
from service_kit.tiers import TIERS, unknown_tier_message

KEY_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ATTRIBUTE_PATTERN = r"^[A-Za-z_$][A-Za-z0-9_.$-]{0,99}$"
MAX_TARGET_IDS = 10_000
MAX_RULES = 200
TIER_OPERATORS = {"in", "notIn", "equals"}


FlagKey = Annotated[str, Field(pattern=KEY_PATTERN)]
VariantName = Annotated[str, Field(pattern=NAME_PATTERN)]
AttributeName = Annotated[str, Field(pattern=ATTRIBUTE_PATTERN)]
ClauseValue = StrictStr | StrictBool | StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)]
Operator = Literal[
    "in", "notIn", "equals", "contains", "startsWith", "endsWith", "matches", "lt", "lte", "gt", "gte",
    "semverEq", "semverLt", "semverLte", "semverGt", "semverGte", "before", "after", "segmentMatch",
]  # fmt: skip
FlagType = Literal["boolean", "string", "number", "json"]
FlagKind = Literal["release", "experiment", "ops", "permission"]


class Document(Strict):
    """Base of the stored documents: no unknown fields, and no coercion (``1`` is not ``true``)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class InvalidDocument(ValidationError):
    """A document failed validation; ``details`` maps each field path to what is wrong with it."""


class Clause(Document):
    """One condition: the context's ``attribute`` compared by ``op`` with any of ``values``."""

    attribute: AttributeName = TARGETING_KEY
    op: Operator
    values: list[ClauseValue] = Field(min_length=1, max_length=MAX_TARGET_IDS)
    negate: bool = False


class WeightedVariant(Document):
    variant: VariantName
    weight: JsonInt = Field(ge=0, le=MAX_TOTAL_WEIGHT)


class Serve(Document):
    """What a rule or the fallthrough serves: ``{"variant": name}`` or ``{"rollout": [{variant, weight}]}``
    (exactly one of the two)."""

    variant: VariantName | None = None
    rollout: list[WeightedVariant] | None = Field(default=None, min_length=1, max_length=100)

    @pydantic.model_validator(mode="after")
    def _one_of_variant_or_rollout(self) -> Serve:
        if (self.variant is None) == (self.rollout is None):
            raise ValueError('must be {"variant": name} or {"rollout": [{"variant", "weight"}, ...]}')
        return self

    @model_serializer(mode="wrap")
    def _without_the_absent_one(self, handler: pydantic.SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {name: value for name, value in handler(self).items() if value is not None}


class Target(Document):
    variant: VariantName
    values: list[StrictStr] = Field(max_length=MAX_TARGET_IDS)


class Rule(Document):
    id: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None  # default: rule-<position>
    description: str = Field(default="", max_length=2000)
    clauses: list[Clause] = Field(min_length=1, max_length=100)
    serve: Serve


class Prerequisite(Document):
    flag: FlagKey
    variant: VariantName


class EnvironmentState(Document):
    """A flag in one environment; fields left out take their defaults (off, serving the off variant)."""

    enabled: bool = False
    targets: list[Target] = Field(default=[], max_length=1000)
    rules: list[Rule] = Field(default=[], max_length=MAX_RULES)
    fallthrough: Serve | None = None  # default: the off variant
    prerequisites: list[Prerequisite] = Field(default=[], max_length=100)


class FlagDocument(Document):
    """A flag as ``PUT`` takes it: what ``GET`` gave may be sent back, ``version`` included; ``key`` may be
    left out (the path names it) but cannot change."""

    key: FlagKey | None = None
    version: JsonInt | None = Field(default=None, description="ignored: send the version you read as If-Match")
    type: FlagType = "boolean"
    description: str = Field(default="", max_length=2000)
    owner: str = Field(default="", max_length=2000)
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default=[], max_length=50)
    kind: FlagKind = "release"
    expiresAt: str | None = Field(default=None, description="RFC 3339 date")
    variants: dict[VariantName, Any] = Field(min_length=1, max_length=100)
    offVariant: VariantName
    salt: str | None = Field(default=None, min_length=1, max_length=200, description="default: the key")
    bucketBy: AttributeName = TARGETING_KEY
    clientVisible: bool = False
    environments: dict[str, EnvironmentState] = Field(default={}, description="state per configured environment")


class NewFlag(FlagDocument):
    """A flag as ``POST`` creates it."""

    key: FlagKey


class Flag(NewFlag):
    """A stored flag, as the admin API answers it."""

    model_config = ConfigDict(extra="ignore")
    version: int
    salt: str
    environments: dict[str, EnvironmentState]


class SegmentDocument(Document):
    """A segment as ``PUT`` takes it (``key`` may be left out: the path names it); its clauses cannot refer
    to other segments."""

    key: FlagKey | None = None
    version: JsonInt | None = Field(default=None, description="ignored: send the version you read as If-Match")
    environment: str | None = Field(default=None, description="ignored: the path names the environment")
    name: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=2000)
    included: list[StrictStr] = Field(default=[], max_length=MAX_TARGET_IDS)
    excluded: list[StrictStr] = Field(default=[], max_length=MAX_TARGET_IDS)
    clauses: list[Clause] = Field(default=[], max_length=100)


class NewSegment(SegmentDocument):
    """A segment as ``POST`` creates it."""

    key: FlagKey


class Segment(NewSegment):
    model_config = ConfigDict(extra="ignore")
    version: int
    environment: str


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_VALUE_CHECKS = {
    "boolean": (lambda v: isinstance(v, bool), "a boolean"),
    "string": (lambda v: isinstance(v, str), "a string"),
    "number": (_is_number, "a number"),
    "json": (lambda v: v is not None, "a JSON value other than null"),
}


def _parsed(model: type[Document], document: Mapping[str, Any]) -> dict[str, Any]:
    """The document checked field by field by ``model``, with its defaults filled in."""
    try:
        parsed = model.model_validate(document)
    except pydantic.ValidationError as error:
        raise InvalidDocument(validation_details(error)) from None
    return parsed.model_dump(exclude={"version", "environment"})


class _Checker:
    """Collects every problem across fields at once, keyed by a dotted field path."""

    def __init__(self, variants: Mapping[str, Any]) -> None:
        self.errors: dict[str, str] = {}
        self.variants = variants
        self.segment_keys: frozenset[str] | None = None

    def fail(self, path: str, message: str) -> None:
        self.errors.setdefault(path, message)

    def variant(self, name: str, path: str) -> None:
        if name not in self.variants:
            self.fail(path, "must name one of the flag's variants")

    def serve(self, serve: Mapping[str, Any], path: str) -> None:
        if "variant" in serve:
            self.variant(serve["variant"], f"{path}.variant")
            return
        for index, part in enumerate(serve["rollout"]):
            self.variant(part["variant"], f"{path}.rollout[{index}].variant")
        total = sum(part["weight"] for part in serve["rollout"])
        if total <= 0:
            self.fail(f"{path}.rollout", "weights must add up to more than 0")
        elif total > MAX_TOTAL_WEIGHT:
            self.fail(f"{path}.rollout", f"weights must add up to at most {MAX_TOTAL_WEIGHT}")

    def clause(self, clause: Mapping[str, Any], path: str, *, allow_segments: bool) -> None:
        if clause["op"] == SEGMENT_MATCH and not allow_segments:
            self.fail(f"{path}.op", "segments cannot refer to segments")
            return
        for index, value in enumerate(clause["values"]):
            message = self._clause_value_problem(clause["op"], clause["attribute"], value)
            if message:
                self.fail(f"{path}.values[{index}]", message)
                break

    def _clause_value_problem(self, op: str, attribute: str, value: object) -> str | None:
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
        if op == SEGMENT_MATCH and self.segment_keys is not None and value not in self.segment_keys:
            return "no such segment in this environment"
        if attribute == "tier" and op in TIER_OPERATORS and value not in TIERS:
            return unknown_tier_message()
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
    document: Mapping[str, Any],
    environments: Iterable[str],
    *,
    segment_keys: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, Any]:
    """Return the normalised flag document (defaults filled in) or raise ``InvalidDocument``."""
    environments = list(environments)
    doc = _parsed(NewFlag, document)
    doc["salt"] = doc["salt"] or doc["key"]
    check = _Checker(doc["variants"])
    if doc["expiresAt"] is not None and parse_date(doc["expiresAt"]) is None:
        check.fail("expiresAt", "must be an RFC 3339 date or null")
    value_check, type_name = _VALUE_CHECKS[doc["type"]]
    for name, value in doc["variants"].items():
        if not value_check(value):
            check.fail(f"variants.{name}", f"must be {type_name} for a {doc['type']} flag")
    check.variant(doc["offVariant"], "offVariant")
    states = doc["environments"]
    for name in sorted(set(states) - set(environments)):
        check.fail(f"environments.{name}", f"unknown environment (known: {', '.join(environments)})")
    for env in environments:
        state = states.get(env) or {}
        state = states[env] = {**state, "fallthrough": state.get("fallthrough") or {"variant": doc["offVariant"]}}
        state.setdefault("enabled", False)
        for field in ("targets", "rules", "prerequisites"):
            state.setdefault(field, [])
        check.segment_keys = None if segment_keys is None else frozenset(segment_keys.get(env, ()))
        _check_state(check, state, doc["key"], f"environments.{env}")
    if check.errors:
        raise InvalidDocument(check.errors)
    return doc


def _check_state(check: _Checker, state: dict[str, Any], key: str, path: str) -> None:
    for index, target in enumerate(state["targets"]):
        check.variant(target["variant"], f"{path}.targets[{index}].variant")
    rule_ids: set[str] = set()
    for index, rule in enumerate(state["rules"]):
        rule_path = f"{path}.rules[{index}]"
        rule["id"] = rule["id"] or f"rule-{index + 1}"
        if rule["id"] in rule_ids:
            check.fail(f"{rule_path}.id", "must be unique within the environment")
        rule_ids.add(rule["id"])
        for clause_index, clause in enumerate(rule["clauses"]):
            check.clause(clause, f"{rule_path}.clauses[{clause_index}]", allow_segments=True)
        check.serve(rule["serve"], f"{rule_path}.serve")
    check.serve(state["fallthrough"], f"{path}.fallthrough")
    for index, prerequisite in enumerate(state["prerequisites"]):
        if prerequisite["flag"] == key:
            check.fail(f"{path}.prerequisites[{index}].flag", "a flag cannot require itself")


def validate_segment(document: Mapping[str, Any]) -> dict[str, Any]:
    """Return the normalised segment document or raise ``InvalidDocument``."""
    doc = _parsed(NewSegment, document)
    check = _Checker({})
    for index, clause in enumerate(doc["clauses"]):
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
