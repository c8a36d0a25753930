"""Bucketing agreement with openfeature-flagd-core's ``fractional`` on 100,000 keys, and the spread of
a 10% rollout over 100,000 keys. Run: .venv/bin/python -m bench.flags_bucketing
"""

from __future__ import annotations

import time

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from flags_service.engine import evaluate

KEYS = 100_000
SPLITS = {
    "10/90": [("on", 10), ("off", 90)],
    "33/33/34 (1:1:1)": [("a", 1), ("b", 1), ("c", 1)],
    "50/50": [("control", 50), ("treatment", 50)],
}


def agreement(flag_key: str, weights: list[tuple[str, int]], keys: list[str]) -> tuple[int, float, float]:
    core = FlagdCore()
    core.set_flags(
        {
            "flags": {
                flag_key: {
                    "state": "ENABLED",
                    "variants": {name: name for name, _ in weights},
                    "defaultVariant": weights[0][0],
                    "targeting": {"fractional": [[name, weight] for name, weight in weights]},
                }
            }
        }
    )
    flag = {
        "key": flag_key,
        "enabled": True,
        "variants": {name: name for name, _ in weights},
        "offVariant": weights[0][0],
        "fallthrough": {"rollout": [{"variant": name, "weight": weight} for name, weight in weights]},
    }
    started = time.perf_counter()
    theirs = [core.resolve_string_value(flag_key, "x", EvaluationContext(key)).variant for key in keys]
    their_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ours = [evaluate(flag, {"targetingKey": key}).variant for key in keys]
    our_seconds = time.perf_counter() - started
    return sum(a == b for a, b in zip(theirs, ours, strict=True)), their_seconds, our_seconds


def main() -> None:
    keys = [f"customer-{i}" for i in range(KEYS)]
    print("| split | keys | same variant as flagd-core | flagd-core s | ours s |")
    print("|---|---|---|---|---|")
    for name, weights in SPLITS.items():
        same, theirs, ours = agreement(f"bench-{name.split()[0]}", weights, keys)
        print(f"| {name} | {KEYS} | {same / KEYS:.4%} ({same}) | {theirs:.2f} | {ours:.2f} |")
    ten = {
        "key": "ten-percent",
        "enabled": True,
        "variants": {"on": True, "off": False},
        "offVariant": "off",
        "fallthrough": {"rollout": [{"variant": "on", "weight": 10}, {"variant": "off", "weight": 90}]},
    }
    served = sum(evaluate(ten, {"targetingKey": key}).value is True for key in keys)
    share = served / KEYS
    verdict = "within" if abs(share - 0.10) <= 0.005 else "OUTSIDE"
    print(f"\n10% rollout over {KEYS} keys: {served} served = {share:.3%} ({verdict} ±0.5%)")


if __name__ == "__main__":
    main()
