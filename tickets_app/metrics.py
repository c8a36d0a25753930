"""Support metrics computed from the database at scrape time, so every worker reports the same numbers.

Counters come from append-only facts (the event log and ticket creation), which is what makes a
database-derived counter monotonic; gauges and histograms are recomputed on each scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from tickets_app.listing import SlaWindow, sla_at_risk, sla_breached
from tickets_app.models import Ticket, TicketEvent
from tickets_app.workflow import OPEN_STATUSES, PRIORITIES

DURATION_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)


class SupportCollector(Collector):
    """Reads the desk's tables on every collect(); `session_factory` gives a fresh session."""

    def __init__(
        self, session_factory: Callable[[], Session], at_risk: timedelta, clock: Callable[[], datetime]
    ) -> None:
        self.session_factory = session_factory
        self.at_risk = at_risk
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        """Names only, so registering runs no query."""
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        with self.session_factory() as session:
            self._fill(session, families)
        return list(families.values())

    def _families(self) -> dict[str, Metric]:
        return {
            "open": GaugeMetricFamily(
                "support_tickets_open",
                "Tickets not yet resolved, by status and priority.",
                labels=["status", "priority"],
            ),
            "unassigned": GaugeMetricFamily(
                "support_tickets_unassigned", "Unresolved tickets with no assignee.", labels=["priority"]
            ),
            "at_risk": GaugeMetricFamily(
                "support_tickets_at_risk",
                "Unresolved tickets with an SLA deadline inside the at-risk margin.",
                labels=["priority"],
            ),
            "breached": GaugeMetricFamily(
                "support_tickets_breached", "Unresolved tickets that have breached an SLA target.", labels=["priority"]
            ),
            "breaches": CounterMetricFamily(
                "support_sla_breaches", "SLA breaches recorded, once per breach.", labels=["metric", "priority"]
            ),
            "created": CounterMetricFamily(
                "support_tickets_created", "Tickets created, by initial priority.", labels=["priority"]
            ),
            "resolved": CounterMetricFamily(
                "support_tickets_resolved", "Transitions to resolved, by priority at the time.", labels=["priority"]
            ),
            "first_response": HistogramMetricFamily(
                "support_first_response_seconds",
                "Time from creation to the first public staff reply.",
                labels=["priority"],
            ),
            "resolution": HistogramMetricFamily(
                "support_resolution_seconds", "Time from creation to resolution.", labels=["priority"]
            ),
        }

    def _fill(self, session: Session, families: dict[str, Metric]) -> None:
        now = self.clock()
        unresolved = Ticket.status.in_(OPEN_STATUSES)
        counts = dict.fromkeys(((s, p) for s in OPEN_STATUSES for p in PRIORITIES), 0)
        for status, priority, count in session.execute(
            select(Ticket.status, Ticket.priority, func.count())
            .where(unresolved)
            .group_by(Ticket.status, Ticket.priority)
        ):
            counts[(status, priority)] = count
        for (status, priority), count in counts.items():
            families["open"].add_metric([status, priority], count)  # type: ignore[attr-defined]

        # The same conditions as the desk's views (tickets_app.listing), so gauge and queue never disagree.
        for key, condition in (
            ("unassigned", Ticket.assignee_id.is_(None)),
            ("breached", sla_breached(now)),
            ("at_risk", sla_at_risk(SlaWindow(now, self.at_risk))),
        ):
            self._by_priority(
                session, families[key], select(Ticket.priority, func.count()).where(unresolved, condition)
            )

        event_priority = TicketEvent.data["priority"].as_string()
        breach_metric = TicketEvent.data["metric"].as_string()
        for metric, priority, count in session.execute(
            select(breach_metric, event_priority, func.count())
            .where(TicketEvent.kind == "sla_breach")
            .group_by(breach_metric, event_priority)
        ):
            families["breaches"].add_metric([metric, priority], count)  # type: ignore[attr-defined]
        self._by_priority(
            session, families["created"], select(event_priority, func.count()).where(TicketEvent.kind == "created")
        )
        self._by_priority(
            session,
            families["resolved"],
            select(event_priority, func.count()).where(
                TicketEvent.kind == "status", TicketEvent.data["to"].as_string() == "resolved"
            ),
        )
        self._histogram(session, families["first_response"], Ticket.first_response_seconds)
        self._histogram(session, families["resolution"], Ticket.resolution_seconds)

    @staticmethod
    def _by_priority(session: Session, family: Metric, query: object) -> None:
        counts = dict.fromkeys(PRIORITIES, 0)
        grouped = query.group_by(query.selected_columns[0])  # type: ignore[attr-defined]
        for priority, count in session.execute(grouped):
            if priority in counts:
                counts[priority] = count
        for priority, count in counts.items():
            family.add_metric([priority], count)  # type: ignore[attr-defined]

    @staticmethod
    def _histogram(session: Session, family: Metric, column: object) -> None:
        """Cumulative bucket counts in one GROUP BY: SUM(CASE WHEN value <= le THEN 1 END) per bucket."""
        value = column
        columns = [func.count(value), func.coalesce(func.sum(value), 0.0)]  # type: ignore[arg-type]
        columns += [func.sum(case((value <= le, 1), else_=0)) for le in DURATION_BUCKETS]  # type: ignore[operator,arg-type]
        rows = {
            row[0]: row[1:]
            for row in session.execute(
                select(Ticket.priority, *columns).where(value.isnot(None)).group_by(Ticket.priority)  # type: ignore[attr-defined]
            )
        }
        for priority in PRIORITIES:
            count, total, *cumulative = rows.get(priority, (0, 0.0, *([0] * len(DURATION_BUCKETS))))
            buckets = [(str(float(le)), int(n or 0)) for le, n in zip(DURATION_BUCKETS, cumulative, strict=True)]
            buckets.append(("+Inf", int(count)))
            family.add_metric([priority], buckets, float(total))  # type: ignore[attr-defined]
