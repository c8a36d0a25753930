"""The SLA clock: a pure function from a ticket's event history, a policy and a calendar to deadlines.

No I/O, no wall clock: `now` is an argument, so the same JSON vectors pin the behaviour for any
implementation. Three targets, as in Zammad/Zendesk:

- first_response: from creation to the first *public staff* reply (internal notes never count).
- next_response: from a customer reply that follows a staff reply, to the next public staff reply;
  each such cycle is its own window.
- resolution: from creation until the ticket is resolved or closed; a reopen continues the same clock.

A window's clock runs only while the ticket is in a running status: it pauses in the policy's pause
statuses (waiting on the customer by default) and stops when the ticket is resolved or closed, which
also fulfils any response still owed. Time counts in the calendar's business seconds.
A breach is the instant the elapsed time reached the target; callers record it once, when they see it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tickets_app.business_hours import Calendar

METRICS = ("first_response", "next_response", "resolution")
DONE_STATUSES = frozenset({"resolved", "closed"})
DEFAULT_PAUSE_STATUSES = frozenset({"waiting"})


@dataclass(frozen=True)
class Policy:
    """Targets in seconds per metric (a missing metric has no target) and the conditions that pick it."""

    name: str
    targets: Mapping[str, float]
    conditions: Mapping[str, frozenset[str]] = field(default_factory=dict)
    business_hours: bool = False
    pause_statuses: frozenset[str] = DEFAULT_PAUSE_STATUSES

    def matches(self, ticket: Mapping[str, Any]) -> bool:
        """All conditions must hold; a field absent from `conditions` matches anything, a ticket without
        the field (a customer with no tier) matches no condition on it."""
        return all(ticket.get(key) in allowed for key, allowed in self.conditions.items())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """`{"name", "conditions": {"priority": [...], "tier": [...]}, "targets": {metric: minutes}}`, as
        `tickets_app.schemas.SlaPolicyInput` validated and stored it (or a test vector)."""
        return cls(
            name=str(data["name"]),
            targets={metric: float(minutes) * 60 for metric, minutes in (data.get("targets") or {}).items()},
            conditions={key: frozenset(values) for key, values in (data.get("conditions") or {}).items()},
            business_hours=bool(data.get("business_hours", False)),
            pause_statuses=frozenset(data.get("pause_statuses", DEFAULT_PAUSE_STATUSES)),
        )


def select_policy(policies: Sequence[Policy], ticket: Mapping[str, Any]) -> Policy | None:
    """First match wins, so list tighter policies (enterprise urgent) before broader ones."""
    return next((policy for policy in policies if policy.matches(ticket)), None)


@dataclass
class MetricClock:
    """One window of one metric. `elapsed` counts business seconds up to `running_since`."""

    metric: str
    target: float
    started_at: datetime | None = None
    elapsed: float = 0.0
    running_since: datetime | None = None
    fulfilled_at: datetime | None = None
    breached_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.started_at is not None and self.fulfilled_at is None

    def stop(self, at: datetime, calendar: Calendar) -> None:
        """Close the running segment at `at`, noting the breach instant if the target was crossed in it."""
        if self.running_since is None:
            return
        self._note_breach(self.running_since, at, calendar)
        self.elapsed += calendar.seconds_between(self.running_since, at)
        self.running_since = None

    def _note_breach(self, since: datetime, until: datetime, calendar: Calendar) -> None:
        if self.breached_at is not None:
            return
        due = calendar.add_seconds(since, self.target - self.elapsed)
        if due is not None and due <= until:
            self.breached_at = due

    def due_at(self, calendar: Calendar) -> datetime | None:
        if self.running_since is None:
            return None
        return calendar.add_seconds(self.running_since, self.target - self.elapsed)

    def as_dict(self, now: datetime, calendar: Calendar) -> dict[str, Any]:
        if self.started_at is None:
            state = "inactive"
        elif self.fulfilled_at is not None:
            state = "fulfilled"
        elif self.running_since is not None:
            state = "active"
        else:
            state = "paused"
        elapsed = self.elapsed
        if self.running_since is not None:
            self._note_breach(self.running_since, now, calendar)
            elapsed += calendar.seconds_between(self.running_since, now)
        return {
            "state": state,
            "started_at": _iso(self.started_at),
            "due_at": _iso(self.due_at(calendar)),
            "fulfilled_at": _iso(self.fulfilled_at),
            "elapsed_seconds": round(elapsed, 3),
            "remaining_seconds": round(self.target - elapsed, 3),
            "breached": self.breached_at is not None,
            "breached_at": _iso(self.breached_at),
        }


@dataclass(frozen=True)
class Breach:
    """A crossed target; (metric, started_at) identifies the window so it is recorded once."""

    metric: str
    started_at: datetime
    breached_at: datetime


@dataclass(frozen=True)
class SlaResult:
    policy: str | None
    metrics: Mapping[str, Mapping[str, Any]]
    breaches: tuple[Breach, ...]

    def due_at(self, metric: str) -> datetime | None:
        value = self.metrics.get(metric, {}).get("due_at")
        return parse_time(value) if value else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "metrics": dict(self.metrics),
            "breaches": [
                {"metric": b.metric, "started_at": _iso(b.started_at), "breached_at": _iso(b.breached_at)}
                for b in self.breaches
            ],
        }


def compute_sla(
    events: Iterable[Mapping[str, Any]], policy: Policy | None, calendar: Calendar, now: datetime
) -> SlaResult:
    """Replay `events` (sorted by time) under `policy` and report each metric's state as of `now`.

    Events: `{"at", "type": "created", "status"?}`, `{"at", "type": "reply", "author": "staff"|"customer",
    "public": bool}`, `{"at", "type": "status", "to": status}`. Events after `now` are ignored.
    """
    if policy is None:
        return SlaResult(policy=None, metrics={}, breaches=())
    clock_calendar = calendar if policy.business_hours else Calendar.calendar_hours()
    replay = _Replay(policy, clock_calendar)
    for event in events:
        at = parse_time(event["at"])
        if at > now:
            break
        replay.apply(event, at)
    metrics = {
        metric: clock.as_dict(now, clock_calendar)
        for metric, clock in replay.current.items()
        if metric in policy.targets
    }
    breaches = [
        Breach(clock.metric, clock.started_at, clock.breached_at)
        for clock in [*replay.finished, *replay.current.values()]
        if clock.breached_at is not None and clock.started_at is not None and clock.breached_at <= now
    ]
    return SlaResult(policy=policy.name, metrics=metrics, breaches=tuple(breaches))


class _Replay:
    """Walks the events, keeping one clock per metric plus the finished next-response windows."""

    def __init__(self, policy: Policy, calendar: Calendar) -> None:
        self.policy = policy
        self.calendar = calendar
        self.status = "open"
        self.current = {metric: MetricClock(metric, policy.targets.get(metric, 0.0)) for metric in METRICS}
        self.finished: list[MetricClock] = []

    def apply(self, event: Mapping[str, Any], at: datetime) -> None:
        kind = event["type"]
        clocks = self.current
        if kind == "created":
            self.status = str(event.get("status", "open"))
            clocks["first_response"].started_at = at
            clocks["resolution"].started_at = at
        elif kind == "reply" and event.get("author") == "staff" and event.get("public", True):
            for metric in ("first_response", "next_response"):
                if clocks[metric].is_open:
                    self._fulfil(clocks[metric], at)
        elif kind == "reply" and event.get("author") == "customer":
            first, following = clocks["first_response"], clocks["next_response"]
            if first.fulfilled_at is not None and not following.is_open:
                if following.started_at is not None:
                    self.finished.append(following)
                clocks["next_response"] = MetricClock("next_response", following.target, started_at=at)
        elif kind == "status":
            self.status = str(event["to"])
            if self.status in DONE_STATUSES:
                for clock in clocks.values():
                    if clock.is_open:
                        self._fulfil(clock, at)
            elif clocks["resolution"].fulfilled_at is not None:
                # A reopen continues the resolution clock where it stopped.
                clocks["resolution"].fulfilled_at = None
        self._set_running(at)

    def _fulfil(self, clock: MetricClock, at: datetime) -> None:
        clock.stop(at, self.calendar)
        clock.fulfilled_at = at

    def _set_running(self, at: datetime) -> None:
        running = self.status not in DONE_STATUSES and self.status not in self.policy.pause_statuses
        for metric, clock in self.current.items():
            if metric not in self.policy.targets or not clock.is_open:
                continue
            if running and clock.running_since is None:
                clock.running_since = at
            elif not running:
                clock.stop(at, self.calendar)


def parse_time(value: str | datetime) -> datetime:
    """ISO 8601 to an aware UTC datetime; naive input is taken as UTC."""
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
