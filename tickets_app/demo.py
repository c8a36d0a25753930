"""Demo data for `make up`: staff, customers of every tier, SLA policies, and tickets in every state.

Histories are replayed through the Desk with past timestamps, so deadlines, breaches, events and metrics
are what the real code computes, not hand-written rows. The desk they leave is a healthy one, as at the
start of a shift: old breaches are history, but no urgent ticket lacks an assignee and no SLA target falls
due for `HEALTHY_FOR`, so a fresh `make up` fires no support alert while nobody works the queue
(tests/tickets/test_demo_health.py evaluates the alert rules over it).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service_kit.tiers import TIERS
from tickets_app.desk import Actor, Desk
from tickets_app.models import BusinessCalendar, Category, SlaPolicy, StaffUser, Template, Ticket
from tickets_app.passwords import hash_password
from tickets_app.schemas import TicketChange, TicketInput
from tickets_app.workflow import PRIORITIES

# How long the demo desk, left alone, stays clear of every support alert: a working day.
HEALTHY_FOR = timedelta(hours=8)
STAFF = [("ann", "Ann Agent", "agent"), ("raj", "Raj Rao", "agent"), ("admin", "Ada Admin", "admin")]
# How many demo customers each plan has, from free to enterprise: more of the cheaper plans.
TIER_WEIGHTS = dict(zip(TIERS, (5, 3, 2, 1), strict=True))
SUBJECTS = [
    ("billing", "Invoice {n} charged twice"),
    ("billing", "Refund for plan downgrade"),
    ("billing", "VAT number missing on invoice {n}"),
    ("api", "429 Too Many Requests on /v1/generate"),
    ("api", "Webhook signature mismatch since yesterday"),
    ("api", "Timeouts from the EU endpoint"),
    ("account", "Cannot reset my password"),
    ("account", "Add a teammate to organisation {n}"),
    ("bug", "Dashboard shows wrong usage numbers"),
    ("bug", "CSV export cuts off after 10,000 rows"),
]
BODIES = [
    "Since this morning every request returns an error. Request id req_{n}.",
    "We were charged on the 1st and again on the 3rd. Please refund the duplicate.",
    "Our integration stopped working after your release notes mentioned a change.",
    "Could you look into this? It blocks our launch on Friday.",
]


def seed(session: Session, desk: Desk, tickets: int = 300, now: datetime | None = None) -> str:
    """Fill an empty desk (or only reset the demo login of a filled one); returns the agent's password."""
    now = now or datetime.now(UTC)
    password = secrets.token_urlsafe(9)
    existing = {user.id: user for user in session.scalars(select(StaffUser))}
    for user_id, name, role in STAFF:
        user = existing.get(user_id) or StaffUser(id=user_id, name=name, role=role)
        user.password_hash = hash_password(password)
        session.add(user)
    if session.scalar(select(func.count()).select_from(Ticket)):
        session.commit()
        return password
    _configure(session)
    rng = random.Random(5)  # the same demo every time
    customers = [
        Actor(id=f"cust-{i:03d}", role="customer", name=f"Customer {i}", email=f"customer{i}@example.com", tier=tier)
        for i, tier in enumerate(rng.choices(list(TIER_WEIGHTS), weights=list(TIER_WEIGHTS.values()), k=40))
    ]
    agents = [Actor(id=user_id, role=role, name=name) for user_id, name, role in STAFF if role == "agent"]
    for n in range(tickets):
        _one_ticket(session, desk, rng, n, rng.choice(customers), rng.choice(agents), now)
    desk.sweep(session, now)
    _catch_up(session, desk, agents, now)
    session.commit()
    return password


def _catch_up(session: Session, desk: Desk, agents: list[Actor], now: datetime) -> None:
    """What the shift before did last: every open ticket that is urgent and unassigned, or has an SLA target
    due within HEALTHY_FOR, got an agent and a reply asking the customer, so it waits on them (the SLA clock
    paused). Tickets already past a target keep their breach: that is history, not a new alert."""
    running = session.scalars(select(Ticket).where(Ticket.status.in_(("open", "in_progress"))).order_by(Ticket.id))
    for ticket in running.all():
        due_soon = ticket.sla_check_at is not None and ticket.sla_check_at <= now + HEALTHY_FOR
        if not due_soon and not (ticket.priority == "urgent" and ticket.assignee_id is None):
            continue
        agent = next((a for a in agents if a.id == ticket.assignee_id), agents[ticket.id % len(agents)])
        ask = {
            "assignee": agent.id,
            "status": "waiting",
            "message": {"body": "Thanks, we are on it. Could you send the request id and the time of a failing call?"},
        }
        desk.update_ticket(session, agent, ticket, _change(ask), now)


def _configure(session: Session) -> None:
    for name in ("billing", "api", "account", "bug"):
        session.add(Category(name=name))
    session.add_all(
        [
            Template(
                name="Greeting",
                body="Hi {{customer_name}},\n\nthanks for reaching out about ticket #{{ticket_id}}."
                "\n\nBest,\n{{agent_name}}",
            ),
            Template(
                name="Need more details",
                body="Hi {{customer_name}}, could you send the request id and the "
                "time (with time zone) of a failing call? — {{agent_name}}",
            ),
            Template(
                name="Resolved",
                body="Hi {{customer_name}}, this is fixed on our side. Reply here if it comes back. — {{agent_name}}",
            ),
        ]
    )
    berlin = BusinessCalendar(
        name="Berlin office",
        definition={
            "timezone": "Europe/Berlin",
            "hours": {day: [["09:00", "18:00"]] for day in ("mon", "tue", "wed", "thu", "fri")},
            "holidays": ["2026-12-24", "2026-12-25", "2026-12-26", "2027-01-01"],
        },
    )
    session.add(berlin)
    session.flush()
    session.add_all(
        [
            SlaPolicy(
                name="Enterprise urgent",
                position=0,
                definition={
                    "conditions": {"tier": ["enterprise"], "priority": ["urgent", "high"]},
                    "targets": {"first_response": 15, "next_response": 30, "resolution": 240},
                },
            ),
            SlaPolicy(
                name="Incidents",
                position=1,
                definition={"conditions": {"source": ["alert"]}, "targets": {"first_response": 10, "resolution": 120}},
            ),
            SlaPolicy(
                name="Urgent",
                position=2,
                definition={
                    "conditions": {"priority": ["urgent"]},
                    "targets": {"first_response": 60, "next_response": 120, "resolution": 480},
                },
            ),
            SlaPolicy(
                name="Standard (business hours)",
                position=3,
                calendar_id=berlin.id,
                definition={
                    "business_hours": True,
                    "targets": {"first_response": 240, "next_response": 480, "resolution": 2400},
                },
            ),
        ]
    )
    session.flush()


def _one_ticket(
    session: Session, desk: Desk, rng: random.Random, n: int, customer: Actor, agent: Actor, now: datetime
) -> None:
    category, subject = rng.choice(SUBJECTS)
    start = now - timedelta(minutes=rng.randint(5, 14 * 24 * 60))
    priority = rng.choices(PRIORITIES, weights=[1, 3, 6, 3])[0]
    new = TicketInput.model_validate(
        {
            "subject": subject.format(n=1000 + n),
            "body": rng.choice(BODIES).format(n=n),
            "priority": priority,
            "category": category,
            "tags": rng.sample(["vip", "eu", "beta", "sdk"], k=1),
        }
    )
    ticket = desk.create_ticket(session, customer, new, start)
    # Walk a random way through the states, never into the future.
    at = start
    for step in range(rng.choice([0, 1, 2, 3, 4, 5])):
        at += timedelta(minutes=rng.randint(5, 600))
        if at >= now:
            break
        if step == 0:
            first_reply = {
                "assignee": agent.id,
                "status": "in_progress",
                "message": {"body": f"Hi {customer.name}, looking into it."},
            }
            desk.update_ticket(session, agent, ticket, _change(first_reply), at)
        elif step == 1:
            ask = {"status": "waiting", "message": {"body": "Could you send a request id?"}}
            desk.update_ticket(session, agent, ticket, _change(ask), at)
        elif step == 2:
            desk.update_ticket(session, customer, ticket, _change({"message": {"body": f"Sure: req_{n}x"}}), at)
        elif step == 3:
            note = {"message": {"body": "Escalated to the API team.", "internal": True}}
            desk.update_ticket(session, agent, ticket, _change(note), at)
        elif step == 4:
            fixed = {"status": "resolved", "message": {"body": "Fixed; please confirm."}}
            desk.update_ticket(session, agent, ticket, _change(fixed), at)
    if ticket.status == "resolved" and rng.random() < 0.5:
        desk.update_ticket(session, agent, ticket, _change({"status": "closed"}), min(at + timedelta(days=1), now))


def _change(fields: Mapping[str, object]) -> TicketChange:
    return TicketChange.model_validate(fields)
