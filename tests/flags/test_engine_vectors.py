"""The engine against the language-neutral vectors in tests/vectors/flags (one param per case)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flags_service.engine import evaluate

VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors" / "flags"


def _cases() -> list[Any]:
    params = []
    for path in sorted(VECTOR_DIR.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        for case in document["cases"]:
            params.append(pytest.param(document, case, id=f"{path.stem}:{case['name']}"))
    return params


def test_vector_directory_has_cases_for_every_operator() -> None:
    operators = {
        clause["op"]
        for path in VECTOR_DIR.glob("*.json")
        for rule in json.loads(path.read_text(encoding="utf-8"))["flag"].get("rules", [])
        for clause in rule["clauses"]
    }
    from flags_service.engine import ALL_OPERATORS

    assert operators == set(ALL_OPERATORS)


@pytest.mark.parametrize(("document", "case"), _cases())
def test_engine_matches_vector(document: dict[str, Any], case: dict[str, Any]) -> None:
    result = evaluate(document["flag"], case["context"], document.get("segments"), document.get("flags"))
    assert result.to_dict() == case["expected"]
