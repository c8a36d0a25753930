"""The cohort maths against the language-neutral vectors in tests/vectors/business (one param per file)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from exporters.business.analytics import CALCULATORS, calculate

VECTORS = sorted((Path(__file__).parents[1] / "vectors" / "business").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in VECTORS])
def test_calculator_publishes_exactly_the_vectors_samples(path: Path) -> None:
    case = load(path)
    metrics = CALCULATORS[case["calculator"]].metrics
    samples = calculate(case["calculator"], case["inputs"], datetime.fromisoformat(case["now"]))
    for metric, expected in case["expected"].items():
        names = list(metrics[metric].labels)
        found = {tuple(zip(names, labels, strict=True)): value for name, labels, value in samples if name == metric}
        wanted = {tuple((label, s["labels"][label]) for label in names): s["value"] for s in expected}
        assert sorted(found) == sorted(wanted), f"{metric}: which samples exist"
        assert found == pytest.approx(wanted, rel=1e-12, abs=1e-12), metric


def test_every_metric_of_every_calculator_is_pinned_by_a_vector() -> None:
    pinned = {(load(path)["calculator"], metric) for path in VECTORS for metric in load(path)["expected"]}
    published = {(name, metric) for name, calculator in CALCULATORS.items() for metric in calculator.metrics}
    assert published - pinned == set()
