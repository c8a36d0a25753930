"""The status table and the reply/auto-close rules, against tests/vectors/tickets/status_transitions.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tickets_app.workflow import (
    STATUSES,
    TransitionError,
    check_transition,
    is_due_for_auto_close,
    status_after_customer_reply,
)

TABLE = json.loads((Path(__file__).parent.parent / "vectors" / "tickets" / "status_transitions.json").read_text())
PAIRS = [(current, target) for current in STATUSES for target in STATUSES if current != target]


@pytest.mark.parametrize(("current", "target"), PAIRS)
def test_transition_allowed_exactly_as_table(current: str, target: str) -> None:
    if target in TABLE["allowed"][current]:
        check_transition(current, target)
    else:
        with pytest.raises(TransitionError, match=f"from {current} to {target}"):
            check_transition(current, target)


def test_unknown_status_is_refused() -> None:
    with pytest.raises(TransitionError):
        check_transition("open", "deleted")


@pytest.mark.parametrize("current", STATUSES)
def test_customer_reply_moves_status_as_table(current: str) -> None:
    assert status_after_customer_reply(current) == TABLE["customer_reply"][current]


def test_resolved_auto_closes_only_after_configured_days() -> None:
    resolved_at = datetime(2026, 11, 1, tzinfo=UTC)
    assert not is_due_for_auto_close("resolved", resolved_at, resolved_at + timedelta(days=2, hours=23), 3)
    assert is_due_for_auto_close("resolved", resolved_at, resolved_at + timedelta(days=3), 3)
    assert not is_due_for_auto_close("open", resolved_at, resolved_at + timedelta(days=30), 3)
