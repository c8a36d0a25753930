"""Bucketing agrees with openfeature-flagd-core 2.x and behaves like a rollout should."""

from __future__ import annotations

import random
import string

import cbor2
import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from flags_service.bucketing import _cbor_value, bucket_hash, pick_variant
from flags_service.engine import evaluate

WEIGHT_SETS = [
    [("on", 10), ("off", 90)],
    [("a", 1), ("b", 1), ("c", 1)],
    [("control", 3333), ("treatment", 6667)],
    [("x", 1), ("y", 0), ("z", 2_000_000)],
]


def _random_keys(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_@.äöü漢字🙂"
    return [
        "".join(rng.choice(alphabet) for _ in range(rng.choice((1, 5, 12, 23, 24, 36, 80, 300)))) for _ in range(count)
    ]


@pytest.mark.parametrize("weights", WEIGHT_SETS, ids=lambda w: "/".join(str(x) for _, x in w))
def test_rollout_agrees_with_flagd_core_on_every_key(weights: list[tuple[str, int]]) -> None:
    flag_key = "agreement-" + "-".join(name for name, _ in weights)
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
    keys = [f"user-{i}" for i in range(2500)] + _random_keys(2500, seed=len(weights))
    disagreements = [
        key
        for key in keys
        if core.resolve_string_value(flag_key, "none", EvaluationContext(key)).variant
        != pick_variant(flag_key, key, [{"variant": name, "weight": weight} for name, weight in weights])
    ]
    assert disagreements == []


@pytest.mark.parametrize(
    "value", ["", "a" * 23, "a" * 24, "b" * 255, "c" * 256, "d" * 65536, "漢字🙂", 0, -1, 2**40, 1.5, True]
)
def test_hand_encoded_cbor_equals_cbor2_canonical(value: object) -> None:
    assert _cbor_value(value) == cbor2.dumps(value, canonical=True)


def test_integral_float_buckets_like_the_integer() -> None:
    assert bucket_hash("salt", 42.0) == bucket_hash("salt", 42)
    assert bucket_hash("salt", 42.5) != bucket_hash("salt", 42)


def _rollout_flag(percent: int) -> dict[str, object]:
    return {
        "key": "monotone",
        "enabled": True,
        "variants": {"on": True, "off": False},
        "offVariant": "off",
        "fallthrough": {"rollout": [{"variant": "on", "weight": percent}, {"variant": "off", "weight": 100 - percent}]},
    }


def test_raising_a_rollout_only_adds_users() -> None:
    users = [f"user-{i}" for i in range(3000)]
    previous: set[str] = set()
    for percent in (0, 1, 5, 10, 25, 50, 75, 99, 100):
        enabled = {u for u in users if evaluate(_rollout_flag(percent), {"targetingKey": u}).value is True}
        assert previous <= enabled, f"raising to {percent}% removed users"
        previous = enabled
    assert previous == set(users)


def test_ten_percent_rollout_distribution_is_within_half_a_percent() -> None:
    flag = _rollout_flag(10)
    served = sum(evaluate(flag, {"targetingKey": f"customer-{i}"}).value is True for i in range(100_000))
    assert abs(served / 100_000 - 0.10) <= 0.005


def test_same_salt_is_stable_and_another_salt_reshuffles() -> None:
    users = [f"u{i}" for i in range(500)]
    weights = [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]
    original = [pick_variant("checkout", u, weights) for u in users]
    assert [pick_variant("checkout", u, weights) for u in users] == original
    assert [pick_variant("checkout-2", u, weights) for u in users] != original
