"""What the staff UI calls things: statuses, priorities, tiers, views and sorts by name, and each event of a
ticket's log as a sentence (pure).

The API keeps the stored words (`in_progress`, `{"from": "open", "to": "in_progress"}`); people read these.
Every event kind the desk writes has its own sentence (a test holds this module to the list in
tickets_app.schemas.Event); a kind added later without one still reads as words, not JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

STATUS_LABELS = {
    "open": "Open",
    "in_progress": "In progress",
    "waiting": "Waiting on customer",
    "resolved": "Resolved",
    "closed": "Closed",
}
PRIORITY_LABELS = {"urgent": "Urgent", "high": "High", "medium": "Medium", "low": "Low"}
TIER_LABELS = {
    "free": "Free",
    "startup": "Startup",
    "professional": "Professional",
    "enterprise": "Enterprise",
    "internal": "Internal",
}
VIEW_LABELS = {
    "open": "Open work",
    "mine": "Assigned to me",
    "unassigned": "Unassigned",
    "at_risk": "At risk",
    "breached": "SLA breached",
    "all": "All tickets",
}
SORT_LABELS = {
    "due": "SLA due, most urgent first",
    "-due": "SLA due, latest first",
    "priority": "Priority, open work first",
    "-priority": "Priority, lowest first",
    "-updated": "Recently updated",
    "updated": "Least recently updated",
    "-created": "Newest",
    "created": "Oldest",
    "relevance": "Best match",
}
METRIC_LABELS = {"first_response": "first reply", "next_response": "next reply", "resolution": "resolution"}

NameOf = Callable[[str | None], str]


def label(labels: Mapping[str, str], value: str | None, missing: str = "—") -> str:
    """`value`'s name, or the value itself for one the table does not know (a tier added later, say)."""
    if value is None:
        return missing
    return labels.get(value, value.replace("_", " ").capitalize())


def describe_event(kind: str, data: Mapping[str, Any], actor: str, name_of: NameOf) -> str:
    """What happened, as the rest of a sentence that starts with who did it (`actor`, an id): "changed the
    status from …". `name_of` turns the ids of people in `data` into names."""
    describe = _DESCRIPTIONS.get(kind)
    if describe is not None:
        try:
            return describe(data, actor, name_of)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # data of an older shape: said plainly below rather than failing the page
    return _plainly(kind, data)


def _changed(what: str, labels: Mapping[str, str]) -> Callable[[Mapping[str, Any], str, NameOf], str]:
    def describe(data: Mapping[str, Any], _actor: str, _name_of: NameOf) -> str:
        return f"changed the {what} from {label(labels, data['from'])} to {label(labels, data['to'])}"

    return describe


def _created(data: Mapping[str, Any], _actor: str, _name_of: NameOf) -> str:
    return f"opened the ticket ({label(PRIORITY_LABELS, data['priority'])} priority)"


def _assignee(data: Mapping[str, Any], actor: str, name_of: NameOf) -> str:
    before, after = data.get("from"), data.get("to")
    if after is None:
        return f"unassigned {name_of(before)}"
    if after == actor:
        return "took the ticket" if before is None else f"took the ticket over from {name_of(before)}"
    if before is None:
        return f"assigned it to {name_of(after)}"
    return f"reassigned it from {name_of(before)} to {name_of(after)}"


def _category(data: Mapping[str, Any], _actor: str, _name_of: NameOf) -> str:
    before, after = data.get("from"), data.get("to")
    if after is None:
        return f"removed the category {before}"
    if before is None:
        return f"set the category to {after}"
    return f"changed the category from {before} to {after}"


def _tags(data: Mapping[str, Any], _actor: str, _name_of: NameOf) -> str:
    parts = []
    for verb, tags in (("added", data.get("added") or []), ("removed", data.get("removed") or [])):
        if tags:
            parts.append(f"{verb} the tag{'s' if len(tags) > 1 else ''} {', '.join(tags)}")
    return " and ".join(parts) or "left the tags as they were"


def _merged(data: Mapping[str, Any], _actor: str, _name_of: NameOf) -> str:
    if "into" in data:
        return f"merged this ticket into #{int(data['into'])}"
    return f"merged #{int(data['from'])} into this ticket"


def _follow_up(data: Mapping[str, Any], _actor: str, _name_of: NameOf) -> str:
    return f"replied after it closed, which opened follow-up #{int(data['ticket'])}"


def _sla_breach(data: Mapping[str, Any], _actor: str, _name_of: NameOf) -> str:
    due = datetime.fromisoformat(data["due_at"]).strftime("%Y-%m-%d %H:%M UTC")
    return f"recorded an SLA breach: the {label(METRIC_LABELS, data['metric'])} was due {due}"


def _alert(data: Mapping[str, Any], _actor: str, _name_of: NameOf) -> str:
    firing = len(data["firing"])
    if not firing:
        return "reported every alert of the group resolved"
    return f"reported {firing} alert{'s' if firing > 1 else ''} firing"


def _alert_stale(data: Mapping[str, Any], _actor: str, _name_of: NameOf) -> str:
    stale = len(data["stale"])
    return f"sent an out-of-date notification ({stale} alert{'s' if stale != 1 else ''}), which was ignored"


def _plainly(kind: str, data: Mapping[str, Any]) -> str:
    details = "; ".join(f"{key.replace('_', ' ')} {value}" for key, value in sorted(data.items()))
    return f"{kind.replace('_', ' ')}: {details}" if details else kind.replace("_", " ")


_DESCRIPTIONS: dict[str, Callable[[Mapping[str, Any], str, NameOf], str]] = {
    "created": _created,
    "status": _changed("status", STATUS_LABELS),
    "priority": _changed("priority", PRIORITY_LABELS),
    "assignee": _assignee,
    "category": _category,
    "tags": _tags,
    "merged": _merged,
    "follow_up": _follow_up,
    "sla_breach": _sla_breach,
    "alert": _alert,
    "alert_stale": _alert_stale,
}
EVENT_KINDS = tuple(_DESCRIPTIONS)
