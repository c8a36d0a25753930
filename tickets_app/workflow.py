"""The ticket status machine: one explicit table, and what replies and time do to a status.

Pure: the service asks these functions and records what they answer as events.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, get_args

from service_kit.errors import ConflictError

Status = Literal["open", "in_progress", "waiting", "resolved", "closed"]
Priority = Literal["urgent", "high", "medium", "low"]
STATUSES: tuple[str, ...] = get_args(Status)
PRIORITIES: tuple[str, ...] = get_args(Priority)
OPEN_STATUSES = ("open", "in_progress", "waiting")  # unresolved: work still to do
DONE_STATUSES = ("resolved", "closed")
assert set(OPEN_STATUSES) | set(DONE_STATUSES) == set(STATUSES)

# Staff-driven changes. `closed` is final: a later reply opens a linked follow-up ticket instead.
TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"in_progress", "waiting", "resolved", "closed"}),
    "in_progress": frozenset({"open", "waiting", "resolved", "closed"}),
    "waiting": frozenset({"open", "in_progress", "resolved", "closed"}),
    "resolved": frozenset({"open", "in_progress", "closed"}),
    "closed": frozenset(),
}

FOLLOW_UP = "follow_up"


class TransitionError(ConflictError):
    """A status change the table does not allow from the ticket's current status: a 409, since the same
    request is fine for a ticket in another status."""

    def __init__(self, current: str, target: str) -> None:
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none (closed is final)"
        message = f"cannot change status from {current} to {target}; allowed: {allowed}"
        super().__init__(message, {"status": message})


def check_transition(current: str, target: str) -> None:
    """Raise TransitionError unless staff may move a ticket from `current` to `target`."""
    if target not in STATUSES:
        raise TransitionError(current, target)
    if target != current and target not in TRANSITIONS[current]:
        raise TransitionError(current, target)


def status_after_customer_reply(current: str) -> str:
    """A customer reply resumes waiting and reopens resolved tickets; on a closed one it asks for a
    follow-up ticket (FOLLOW_UP) rather than reviving history."""
    if current == "closed":
        return FOLLOW_UP
    if current in ("waiting", "resolved"):
        return "open"
    return current


def is_due_for_auto_close(status: str, resolved_at: datetime | None, now: datetime, days: float) -> bool:
    """Resolved tickets close by themselves `days` after resolution."""
    return status == "resolved" and resolved_at is not None and now - resolved_at >= timedelta(days=days)
