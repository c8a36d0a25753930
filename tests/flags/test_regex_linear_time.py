"""The ``matches`` operator runs in linear time (RE2): classic ReDoS patterns cannot stall a worker.

Subjects come from OFREP contexts, which browsers send with client keys, so a slow pattern is a denial of
service anyone can trigger. Python's ``re`` took 0.85 s for ``(a|a)*b`` on 23 characters (four times longer
per two more) and 5.9 s for ``a*a*a*a*b`` on 200; RE2 answers in microseconds on 1,024.
"""

from __future__ import annotations

import time

import pytest

from flags_service.engine import MAX_REGEX_SUBJECT, evaluate
from flags_service.sdk import FlagsClient

# (pattern, what repeats in a subject that almost matches: the worst case for a backtracking engine)
REDOS_CASES = [
    ("(a|a)*b", "a"),
    ("a*a*a*a*b", "a"),
    ("^(a+)+$", "a"),
    ("(x|y*)*z", "y"),
    ("^(a|aa)+$", "a"),
    ("^(\\w+\\s?)*$", "ab "),
]
BUDGET_SECONDS = 0.010  # generous on a loaded machine; backtracking took seconds to hours here


def _flag(pattern: str) -> dict[str, object]:
    return {
        "key": "redos",
        "enabled": True,
        "variants": {"on": True, "off": False},
        "offVariant": "off",
        "rules": [
            {
                "id": "r",
                "clauses": [{"attribute": "s", "op": "matches", "values": [pattern]}],
                "serve": {"variant": "on"},
            }
        ],
        "fallthrough": {"variant": "off"},
    }


def _subject(unit: str) -> str:
    return (unit * MAX_REGEX_SUBJECT)[: MAX_REGEX_SUBJECT - 1] + "!"


@pytest.mark.parametrize(("pattern", "unit"), REDOS_CASES)
def test_engine_evaluates_a_redos_pattern_on_1024_characters_in_under_10_ms(pattern: str, unit: str) -> None:
    flag, context = _flag(pattern), {"s": _subject(unit)}
    assert len(context["s"]) == MAX_REGEX_SUBJECT
    evaluate(flag, {"s": "warm the pattern cache"})
    started = time.perf_counter()
    result = evaluate(flag, context)
    elapsed = time.perf_counter() - started
    assert result.variant == "off"
    assert elapsed < BUDGET_SECONDS, f"{pattern}: {elapsed * 1000:.1f} ms"


@pytest.mark.parametrize(("pattern", "unit"), REDOS_CASES[:2])
def test_sdk_evaluates_a_redos_pattern_on_1024_characters_in_under_10_ms(pattern: str, unit: str) -> None:
    snapshot = {"environment": "production", "version": 1, "flags": {"redos": _flag(pattern)}, "segments": {}}
    sdk = FlagsClient("http://127.0.0.1:9", "fsk_unused", bootstrap=snapshot, start=False)
    sdk.evaluate("redos", context={"s": "warm"})
    started = time.perf_counter()
    details = sdk.evaluate("redos", False, context={"s": _subject(unit)})
    elapsed = time.perf_counter() - started
    assert details.variant == "off"
    assert elapsed < BUDGET_SECONDS, f"{pattern}: {elapsed * 1000:.1f} ms"
