"""The flag evaluation engine: one pure function over plain JSON-shaped data.

``evaluate(flag, context, segments, flags)`` never does I/O and never raises for a well-formed flag;
the service, the Python SDK and the JSON test vectors in ``tests/vectors/flags`` all run this one
function. The order is LaunchDarkly's: disabled -> prerequisites -> individual targets -> rules (first
match) -> fallthrough. Flag shape (see docs in README):

    {"key", "type", "enabled", "variants": {name: value}, "offVariant",
     "prerequisites": [{"flag", "variant"}], "targets": [{"variant", "values": [ids]}],
     "rules": [{"id", "clauses": [...], "serve": SERVE}],
     "fallthrough": SERVE, "salt"?, "bucketBy"?, "metadata"?}
    SERVE = {"variant": name} | {"rollout": [{"variant": name, "weight": int}, ...]}
    clause = {"attribute", "op", "values": [...], "negate"?: bool}
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import re2

from flags_service.bucketing import pick_variant

JSON = Any
Flag = Mapping[str, Any]
Context = Mapping[str, Any]

# Reasons as OpenFeature / OFREP name them.
STATIC, TARGETING_MATCH, SPLIT, DISABLED, DEFAULT, ERROR = (
    "STATIC",
    "TARGETING_MATCH",
    "SPLIT",
    "DISABLED",
    "DEFAULT",
    "ERROR",
)
TARGETING_KEY = "targetingKey"
MAX_REGEX_PATTERN = 256  # patterns are validated on save (compile_regex) and kept short
MAX_REGEX_SUBJECT = 1024  # longer attribute values never match a regex clause
MAX_PREREQUISITE_DEPTH = 16


EMPTY_METADATA: Mapping[str, str | int | float | bool] = MappingProxyType({})


class Evaluation(NamedTuple):
    """What one evaluation served, and why (a tuple: cheap to build on the hot path, immutable)."""

    value: JSON
    variant: str | None
    reason: str
    rule_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    metadata: Mapping[str, str | int | float | bool] = EMPTY_METADATA

    def to_dict(self) -> dict[str, JSON]:
        """The language-neutral shape the test vectors pin."""
        return {
            "value": self.value,
            "variant": self.variant,
            "reason": self.reason,
            "ruleId": self.rule_id,
            "errorCode": self.error_code,
        }


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same_json(left: object, right: object) -> bool:
    """JSON equality: ``True`` is not ``1`` and ``1`` is ``1.0``."""
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if _is_number(left) and _is_number(right):
        return left == right
    return type(left) is type(right) and left == right


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is the caller's 422, not a line on the service's stderr


@functools.lru_cache(maxsize=1024)
def compile_regex(pattern: str) -> re2._Regexp:
    """A ``matches`` pattern compiled by RE2, which runs in time linear in the subject: subjects come from
    OFREP contexts that browsers send, and a backtracking engine (Python's ``re``) let ``(a|a)*b`` take
    seconds on 25 characters. RE2 syntax: no backreferences, no lookahead or lookbehind; a pattern using
    them raises ``re2.error`` (refused when the flag is saved)."""
    return re2.compile(pattern, _RE2_OPTIONS)


_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)


@functools.lru_cache(maxsize=4096)
def parse_semver(text: str) -> tuple[int, int, int, tuple[tuple[int, int | str], ...] | None] | None:
    """Semantic version as a sortable tuple (missing minor/patch count as 0); ``None`` if not a version.

    Pre-release identifiers sort below the release (``1.0.0-rc.1 < 1.0.0``), numeric before alphanumeric.
    """
    match = _SEMVER.match(text)
    if not match:
        return None
    major, minor, patch, pre = match.groups()
    prerelease = tuple((0, int(part)) if part.isdigit() else (1, part) for part in pre.split(".")) if pre else None
    return int(major), int(minor or 0), int(patch or 0), prerelease


def _semver_key(version: tuple[int, int, int, tuple[tuple[int, int | str], ...] | None]) -> tuple[Any, ...]:
    major, minor, patch, pre = version
    # A release (no pre-release) sorts after every pre-release of the same version.
    return (major, minor, patch, 1, ()) if pre is None else (major, minor, patch, 0, pre)


@functools.lru_cache(maxsize=4096)
def _parse_date_text(text: str) -> float | None:
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def parse_date(value: object) -> float | None:
    """A date as Unix seconds: an ISO-8601 / RFC 3339 string (naive means UTC) or a number of seconds."""
    if _is_number(value):
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, str):
        return _parse_date_text(value)
    return None


def _compare_strings(test: Callable[[str, str], bool]) -> Callable[[object, object], bool]:
    def compare(actual: object, expected: object) -> bool:
        return isinstance(actual, str) and isinstance(expected, str) and test(actual, expected)

    return compare


def _compare_numbers(test: Callable[[float, float], bool]) -> Callable[[object, object], bool]:
    def compare(actual: object, expected: object) -> bool:
        return _is_number(actual) and _is_number(expected) and test(actual, expected)  # type: ignore[arg-type]

    return compare


def _compare_semver(
    test: Callable[[tuple[Any, ...], tuple[Any, ...]], bool],
) -> Callable[[object, object], bool]:
    def compare(actual: object, expected: object) -> bool:
        if not isinstance(actual, str) or not isinstance(expected, str):
            return False
        left, right = parse_semver(actual), parse_semver(expected)
        return left is not None and right is not None and test(_semver_key(left), _semver_key(right))

    return compare


def _compare_dates(test: Callable[[float, float], bool]) -> Callable[[object, object], bool]:
    def compare(actual: object, expected: object) -> bool:
        left, right = parse_date(actual), parse_date(expected)
        return left is not None and right is not None and test(left, right)

    return compare


def _regex_match(actual: object, pattern: object) -> bool:
    """``matches``: an RE2 search anywhere in a string of at most 1,024 characters. RE2 syntax, linear in
    the subject: no backreferences (``\\1``), no lookahead or lookbehind (``(?=``, ``(?!``, ``(?<=``); a
    pattern using them is refused when the flag is saved. flagd has no regex operator (its JSONLogic adds
    only ``fractional``, ``sem_ver``, ``starts_with``, ``ends_with``), so there is no flavour to agree with."""
    if not isinstance(actual, str) or not isinstance(pattern, str) or len(actual) > MAX_REGEX_SUBJECT:
        return False
    return compile_regex(pattern).search(actual) is not None


# Each operator compares one context value with one clause value; a clause matches when any context
# value (an attribute may be a list) matches any clause value. ``notIn`` is ``in`` negated.
OPERATORS: dict[str, Callable[[object, object], bool]] = {
    "in": _same_json,
    "equals": _same_json,
    "contains": _compare_strings(lambda actual, expected: expected in actual),
    "startsWith": _compare_strings(str.startswith),
    "endsWith": _compare_strings(str.endswith),
    "matches": _regex_match,
    "lt": _compare_numbers(lambda a, b: a < b),
    "lte": _compare_numbers(lambda a, b: a <= b),
    "gt": _compare_numbers(lambda a, b: a > b),
    "gte": _compare_numbers(lambda a, b: a >= b),
    "semverEq": _compare_semver(lambda a, b: a == b),
    "semverLt": _compare_semver(lambda a, b: a < b),
    "semverLte": _compare_semver(lambda a, b: a <= b),
    "semverGt": _compare_semver(lambda a, b: a > b),
    "semverGte": _compare_semver(lambda a, b: a >= b),
    "before": _compare_dates(lambda a, b: a < b),
    "after": _compare_dates(lambda a, b: a > b),
}
NEGATED_OPERATORS = {"notIn": "in"}
SEGMENT_MATCH = "segmentMatch"
ALL_OPERATORS = frozenset(OPERATORS) | frozenset(NEGATED_OPERATORS) | {SEGMENT_MATCH}


def clause_matches(clause: Mapping[str, Any], context: Context, segments: Mapping[str, Any]) -> bool:
    """One clause. A missing attribute never matches, even negated (a user without a tier is not
    "not in [free]": targeting on data we do not have would surprise whoever wrote the rule)."""
    op = clause["op"]
    negate = clause.get("negate") is True
    if op == "in" or op == "equals":
        actual = context.get(clause.get("attribute", TARGETING_KEY))
        if type(actual) is str:
            # Hot path: list membership of a string is JSON equality (a string equals only strings).
            return (actual in clause["values"]) is not negate
    if op == SEGMENT_MATCH:
        matched = any(segment_matches(segments.get(key), context) for key in clause["values"])
        return matched is not negate
    if op in NEGATED_OPERATORS:
        op, negate = NEGATED_OPERATORS[op], not negate
    actual = context.get(clause.get("attribute", TARGETING_KEY))
    if actual is None:
        return False
    expected_values = clause["values"]
    compare = OPERATORS[op]
    actual_values = actual if type(actual) is list else (actual,)
    for value in actual_values:
        for expected in expected_values:
            if compare(value, expected):
                return not negate
    return negate


def segment_matches(segment: Mapping[str, Any] | None, context: Context) -> bool:
    """Excluded ids lose, then included ids win, then all clauses (if any) must match."""
    if segment is None:
        return False
    key = context.get(TARGETING_KEY)
    if key is not None:
        if key in segment.get("excluded", ()):
            return False
        if key in segment.get("included", ()):
            return True
    clauses = segment.get("clauses") or ()
    return bool(clauses) and all(clause_matches(clause, context, {}) for clause in clauses)


# Evaluation(...) runs the generated Python ``__new__``; on the hot path build the tuple directly (all fields).
_new_evaluation: Callable[[tuple[Any, ...]], Evaluation] = functools.partial(tuple.__new__, Evaluation)


def _error(flag: Flag, code: str, message: str) -> Evaluation:
    return Evaluation(None, None, ERROR, None, code, message, flag.get("metadata") or EMPTY_METADATA)


def _serve_variant(flag: Flag, variant: str, reason: str, rule_id: str | None) -> Evaluation:
    """Metadata passes through as given: ``compile_flag`` keeps it to the scalar values OFREP allows."""
    try:
        value = flag["variants"][variant]
    except KeyError:
        return _error(flag, "GENERAL", f"variant {variant!r} is not defined")
    return _new_evaluation((value, variant, reason, rule_id, None, None, flag.get("metadata") or EMPTY_METADATA))


def _serve(flag: Flag, serve: Mapping[str, Any], context: Context, reason: str, rule_id: str | None) -> Evaluation:
    rollout = serve.get("rollout")
    if rollout is None:
        return _serve_variant(flag, serve["variant"], reason, rule_id)
    bucket_by = flag.get("bucketBy") or TARGETING_KEY
    value = context.get(bucket_by)
    # A non-empty string (the usual targeting key) needs no further checks.
    if (type(value) is not str or not value) and (value is None or value == "" or isinstance(value, (list, dict))):
        code = "TARGETING_KEY_MISSING" if bucket_by == TARGETING_KEY else "INVALID_CONTEXT"
        return _error(flag, code, f"rollout needs the context attribute {bucket_by!r}")
    variant = pick_variant(flag.get("salt") or flag["key"], value, rollout)
    if variant is None:
        return _error(flag, "GENERAL", "rollout weights must add up to 1..MaxInt32")
    return _serve_variant(flag, variant, SPLIT, rule_id)


def context_attributes(
    flag: Flag, flags: Mapping[str, Flag] | None = None, _chain: tuple[str, ...] = ()
) -> frozenset[str] | None:
    """The context attributes ``evaluate`` may read for ``flag`` (prerequisites included), or ``None`` when
    it reads the targeting key, a bucketing attribute or a segment: then the result varies per user.

    With a set, the result is a function of those attributes' values alone, so callers may memoise it.
    """
    if not flag.get("enabled", False):
        return frozenset()
    rules = flag.get("rules") or ()
    serves = [flag["fallthrough"], *(rule["serve"] for rule in rules)]
    if flag.get("targets") or any("rollout" in serve for serve in serves):
        return None
    attributes = set()
    for rule in rules:
        for clause in rule["clauses"]:
            if clause["op"] == SEGMENT_MATCH:
                return None
            attributes.add(clause.get("attribute", TARGETING_KEY))
    chain = (*_chain, flag["key"])
    for prerequisite in flag.get("prerequisites") or ():
        required = (flags or {}).get(prerequisite["flag"])
        if required is None:
            continue  # a missing prerequisite fails for every context
        if prerequisite["flag"] in chain or len(chain) > MAX_PREREQUISITE_DEPTH:
            return None
        inner = context_attributes(required, flags, chain)
        if inner is None:
            return None
        attributes |= inner
    return None if TARGETING_KEY in attributes else frozenset(attributes)


def evaluate(
    flag: Flag,
    context: Context,
    segments: Mapping[str, Any] | None = None,
    flags: Mapping[str, Flag] | None = None,
    _chain: tuple[str, ...] = (),
) -> Evaluation:
    """Evaluate ``flag`` for ``context``; ``flags`` resolves prerequisites, ``segments`` segment clauses."""
    if not flag.get("enabled", False):
        return _serve_variant(flag, flag["offVariant"], DISABLED, None)

    prerequisites = flag.get("prerequisites") or ()
    if prerequisites:
        chain = (*_chain, flag["key"])
        if len(chain) > MAX_PREREQUISITE_DEPTH:
            return _error(flag, "GENERAL", "prerequisite chain too deep")
        for prerequisite in prerequisites:
            required_key = prerequisite["flag"]
            if required_key in chain:
                return _error(flag, "GENERAL", f"prerequisite cycle through {required_key!r}")
            required = (flags or {}).get(required_key)
            outcome = None if required is None else evaluate(required, context, segments, flags, chain)
            if outcome is not None and outcome.reason == ERROR:
                # A broken prerequisite (cycle, missing bucketing attribute) is this flag's error too.
                return _error(flag, outcome.error_code or "GENERAL", f"{required_key}: {outcome.error_message}")
            if outcome is None or outcome.variant != prerequisite["variant"]:
                return _serve_variant(flag, flag["offVariant"], DEFAULT, f"prerequisite:{required_key}")

    targets = flag.get("targets")
    if targets:
        targeting_key = context.get(TARGETING_KEY)
        if targeting_key is not None:
            for target in targets:
                if targeting_key in target["values"]:
                    return _serve_variant(flag, target["variant"], TARGETING_MATCH, "target")
    rules = flag.get("rules")

    if rules:
        segments = segments or {}
        for rule in rules:
            for clause in rule["clauses"]:
                if not clause_matches(clause, context, segments):
                    break
            else:  # every clause matched
                return _serve(flag, rule["serve"], context, TARGETING_MATCH, rule["id"])

    fallthrough_reason = DEFAULT if (targets or rules or prerequisites) else STATIC
    return _serve(flag, flag["fallthrough"], context, fallthrough_reason, None)
