"""Ticket lists and search: filters, full-text ranking, sorting and cursor (keyset) pagination."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, exists, literal, or_, select
from sqlalchemy.orm import Session

from tickets_app.desk import Actor
from tickets_app.models import Category, Ticket, ticket_tags
from tickets_app.query import ParsedQuery, parse_query
from tickets_app.schemas import TicketQuery
from tickets_app.search import SearchIndex
from tickets_app.workflow import PRIORITIES

PRIORITY_RANK = case({p: i for i, p in enumerate(PRIORITIES)}, value=Ticket.priority, else_=len(PRIORITIES))
FILTERS = ("status", "priority", "category", "tag", "assignee", "requester", "tier")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Page:
    tickets: list[Ticket]
    snippets: dict[int, str]
    next_cursor: str | None


def parsed_query(query: TicketQuery) -> ParsedQuery:
    """The search box's `q` with the explicit filters, bounds and sort on top."""
    parsed = parse_query(query.q)
    for key in FILTERS:
        value = getattr(query, key)
        if value:
            parsed.filters.setdefault(key, []).extend(v for v in value.split(",") if v)
    for key in ("created", "updated"):
        low, high = parsed.ranges.get(key, (None, None))
        low = getattr(query, f"{key}_after") or low
        high = getattr(query, f"{key}_before") or high
        if low or high:
            parsed.ranges[key] = (low, high)
    if query.sort:
        parsed.sort = query.sort
    return parsed


def list_tickets(session: Session, index: SearchIndex, actor: Actor, query: TicketQuery) -> Page:
    """One page of tickets the actor may see, filtered, ranked or sorted, after the query's cursor."""
    parsed = parsed_query(query)
    size, cursor = query.page_size, query.page_cursor
    select_tickets: Select[Any] = select(Ticket).where(Ticket.merged_into_id.is_(None))
    if not actor.is_staff:
        select_tickets = select_tickets.where(Ticket.customer_id == actor.id)
    select_tickets = _apply_filters(select_tickets, parsed)
    sort = parsed.sort or ("relevance" if parsed.terms else "-updated")
    snippet_column = None
    # Relevance without words ranks every ticket alike: the order is then by id.
    key: Any = literal(0.0)
    if parsed.terms:
        fts = index.matches(parsed.terms, include_internal=actor.is_staff)
        select_tickets = select_tickets.join(fts, fts.c.ticket_id == Ticket.id).add_columns(fts.c.snippet)
        snippet_column = fts.c.snippet
        key = fts.c.rank
    descending = sort.startswith("-")
    if sort != "relevance":
        key = {"created": Ticket.created_at, "updated": Ticket.updated_at, "priority": PRIORITY_RANK}[sort.lstrip("-")]
    if cursor:
        value, last_id = _decode_cursor(cursor, sort)
        if descending:
            select_tickets = select_tickets.where(or_(key < value, and_(key == value, Ticket.id < last_id)))
        else:
            select_tickets = select_tickets.where(or_(key > value, and_(key == value, Ticket.id > last_id)))
    order = (key.desc(), Ticket.id.desc()) if descending else (key.asc(), Ticket.id.asc())
    select_tickets = select_tickets.add_columns(key.label("sort_key")).order_by(*order).limit(size + 1)
    rows = session.execute(select_tickets).all()
    tickets = [row[0] for row in rows[:size]]
    snippets = {row[0].id: row.snippet for row in rows[:size]} if snippet_column is not None else {}
    next_cursor = None
    if len(rows) > size:
        last = rows[size - 1]
        next_cursor = _encode_cursor(last.sort_key, last[0].id)
    return Page(tickets=tickets, snippets=snippets, next_cursor=next_cursor)


def _apply_filters(query: Select[Any], parsed: ParsedQuery) -> Select[Any]:
    filters = parsed.filters
    if "status" in filters:
        query = query.where(Ticket.status.in_(filters["status"]))
    if "priority" in filters:
        query = query.where(Ticket.priority.in_(filters["priority"]))
    if "tier" in filters:
        query = query.where(Ticket.customer_tier.in_(filters["tier"]))
    if "requester" in filters:
        values = filters["requester"]
        query = query.where(or_(Ticket.customer_id.in_(values), Ticket.customer_email.in_(values)))
    if "assignee" in filters:
        values = filters["assignee"]
        unassigned = Ticket.assignee_id.is_(None) if "none" in values else None
        assigned = Ticket.assignee_id.in_([v for v in values if v != "none"])
        query = query.where(or_(assigned, unassigned) if unassigned is not None else assigned)
    if "category" in filters:
        query = query.where(Ticket.category_id.in_(select(Category.id).where(Category.name.in_(filters["category"]))))
    for tag in filters.get("tag", []):
        query = query.where(exists().where(ticket_tags.c.ticket_id == Ticket.id, ticket_tags.c.tag == tag.lower()))
    for name, column in (("created", Ticket.created_at), ("updated", Ticket.updated_at)):
        low, high = parsed.ranges.get(name, (None, None))
        if low is not None:
            query = query.where(column >= low)
        if high is not None:
            query = query.where(column <= high)
    return query


def _encode_cursor(value: Any, ticket_id: int) -> str:
    """`<sort key>~<id>` (tickets_app.schemas.CURSOR_PATTERN): a time as Unix microseconds, a rank as
    itself (repr keeps a float exact)."""
    if isinstance(value, datetime):
        value = (value - EPOCH) // timedelta(microseconds=1)
    return f"{value!r}~{ticket_id}"


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    """The position a cursor names under `sort`. Any cursor of the documented shape is a position: a
    time beyond what a datetime holds is before or after every ticket, so it is clamped, not refused."""
    raw_value, _, raw_id = cursor.partition("~")
    value = float(raw_value)
    if sort.lstrip("-") not in ("created", "updated"):
        return value, int(raw_id)
    try:
        return EPOCH + timedelta(microseconds=value), int(raw_id)
    except OverflowError:
        return (datetime.max if value > 0 else datetime.min).replace(tzinfo=UTC), int(raw_id)
