"""The SLA clock against the shared JSON vectors (tests/vectors/tickets/sla_*.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tickets_app.business_hours import Calendar
from tickets_app.sla import Policy, compute_sla, parse_time

VECTORS = sorted((Path(__file__).parent.parent / "vectors" / "tickets").glob("sla_*.json"))


@pytest.mark.parametrize("vector", [pytest.param(p, id=p.stem) for p in VECTORS])
def test_sla_clock_matches_vector(vector: Path) -> None:
    case: dict[str, Any] = json.loads(vector.read_text())
    result = compute_sla(
        case["events"],
        Policy.from_dict(case["policy"]),
        Calendar.from_dict(case["calendar"]),
        parse_time(case["now"]),
    ).as_dict()
    for metric, expected_fields in case["expected"]["metrics"].items():
        actual = {key: result["metrics"][metric][key] for key in expected_fields}
        assert actual == expected_fields, metric
    assert result["breaches"] == case["expected"]["breaches"]


def test_vectors_are_found() -> None:
    assert len(VECTORS) >= 10
