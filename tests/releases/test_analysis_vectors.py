"""The release analysis, pinned by tests/vectors/releases/*.json: measurements in, pass/fail/inconclusive
with the deciding check's name and value out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from releases.analysis import Measurement, Thresholds, analyse

VECTORS = sorted((Path(__file__).parents[1] / "vectors" / "releases").glob("*.json"))


def measurement(values: dict[str, Any]) -> Measurement:
    return Measurement(**{k: float(v) if v is not None else None for k, v in values.items()})


@pytest.mark.parametrize("vector", [pytest.param(p, id=p.stem) for p in VECTORS])
def test_analyse_follows_vector(vector: Path) -> None:
    spec = json.loads(vector.read_text())
    verdict = analyse(measurement(spec["new"]), measurement(spec["old"]), Thresholds(**spec["thresholds"]), "green")
    expected = spec["expected"]
    assert verdict.result == expected["result"]
    assert verdict.check == expected["check"]
    if "value" in expected:
        assert verdict.value == pytest.approx(expected["value"])
    if verdict.result == "fail":  # the message names the check and its value
        assert verdict.check in verdict.message and "green" in verdict.message
    if verdict.result == "inconclusive":
        assert verdict.message.startswith(("no data", "too few"))


def test_vectors_cover_every_check() -> None:
    checks = {json.loads(p.read_text())["expected"]["check"] for p in VECTORS}
    assert {"no_data", "min_requests", "error_ratio", "error_ratio_vs_old", "p99", "p99_vs_old", ""} <= checks
