"""Ticket lists and search: filters, full-text ranking, sorting and cursor (keyset) pagination."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, case, exists, or_, select
from sqlalchemy.orm import Session

from service_kit.errors import ValidationError
from tickets_app.desk import Actor
from tickets_app.models import Category, Ticket, ticket_tags
from tickets_app.query import ParsedQuery, parse_query
from tickets_app.search import SearchIndex
from tickets_app.workflow import PRIORITIES

MAX_PAGE_SIZE = 100
PRIORITY_RANK = case({p: i for i, p in enumerate(PRIORITIES)}, value=Ticket.priority, else_=len(PRIORITIES))


@dataclass
class Page:
    tickets: list[Ticket]
    snippets: dict[int, str]
    next_cursor: str | None


def parse_list_args(args: Mapping[str, str]) -> tuple[ParsedQuery, int, str | None]:
    """Query-string arguments (q plus explicit filters) into one ParsedQuery, page size and cursor."""
    parsed = parse_query(args.get("q", ""))
    for key in ("status", "priority", "category", "tag", "assignee", "requester", "tier"):
        if args.get(key):
            parsed.filters.setdefault(key, []).extend(v for v in args[key].split(",") if v)
    for key in ("created", "updated"):
        low, high = parsed.ranges.get(key, (None, None))
        for bound, attr in (("after", 0), ("before", 1)):
            raw = args.get(f"{key}_{bound}")
            if raw:
                instant = parse_query(f"{key}>{raw}").ranges.get(key, (None, None))[0]
                if instant is None:
                    raise ValidationError({f"{key}_{bound}": "expected an ISO 8601 date or time"})
                low, high = (instant, high) if attr == 0 else (low, instant)
        if low or high:
            parsed.ranges[key] = (low, high)
    if args.get("sort"):
        parsed.sort = args["sort"]
    raw_size = args.get("page[size]", "25")
    try:
        size = int(raw_size)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValidationError({"page[size]": f"expected an integer from 1 to {MAX_PAGE_SIZE}"})
    return parsed, size, args.get("page[cursor]") or None


def list_tickets(
    session: Session,
    index: SearchIndex,
    actor: Actor,
    parsed: ParsedQuery,
    size: int,
    cursor: str | None,
) -> Page:
    """One page of tickets the actor may see, filtered, ranked or sorted, after `cursor`."""
    query: Select[Any] = select(Ticket).where(Ticket.merged_into_id.is_(None))
    if not actor.is_staff:
        query = query.where(Ticket.customer_id == actor.id)
    query = _apply_filters(query, parsed)
    sort = parsed.sort or ("relevance" if parsed.terms else "-updated")
    if sort not in ("relevance", "created", "-created", "updated", "-updated", "priority", "-priority"):
        raise ValidationError({"sort": "expected relevance, created, updated or priority (prefix - for descending)"})
    snippet_column = None
    if parsed.terms:
        fts = index.matches(parsed.terms, include_internal=actor.is_staff)
        query = query.join(fts, fts.c.ticket_id == Ticket.id).add_columns(fts.c.snippet)
        snippet_column = fts.c.snippet
    if sort == "relevance":
        if not parsed.terms:
            raise ValidationError({"sort": "relevance needs search words"})
        key: Any = fts.c.rank
        descending = False
    else:
        descending = sort.startswith("-")
        key = {"created": Ticket.created_at, "updated": Ticket.updated_at, "priority": PRIORITY_RANK}[sort.lstrip("-")]
    if cursor:
        value, last_id = _decode_cursor(cursor, sort)
        if descending:
            query = query.where(or_(key < value, and_(key == value, Ticket.id < last_id)))
        else:
            query = query.where(or_(key > value, and_(key == value, Ticket.id > last_id)))
    order = (key.desc(), Ticket.id.desc()) if descending else (key.asc(), Ticket.id.asc())
    query = query.add_columns(key.label("sort_key")).order_by(*order).limit(size + 1)
    rows = session.execute(query).all()
    tickets = [row[0] for row in rows[:size]]
    snippets = {row[0].id: row.snippet for row in rows[:size]} if snippet_column is not None else {}
    next_cursor = None
    if len(rows) > size:
        last = rows[size - 1]
        next_cursor = _encode_cursor(sort, last.sort_key, last[0].id)
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


def _encode_cursor(sort: str, value: Any, ticket_id: int) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = json.dumps([sort, value, ticket_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    """Cursors are opaque to clients but validated here: a bad one is a 422, never a 500."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_sort, value, ticket_id = json.loads(raw)
        if cursor_sort != sort or not isinstance(ticket_id, int):
            raise ValueError("cursor from another sort")
        if sort.lstrip("-") in ("created", "updated"):
            value = datetime.fromisoformat(value)
        elif not isinstance(value, int | float):
            raise ValueError("bad cursor value")
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError({"page[cursor]": "invalid cursor; start again from the first page"}) from exc
    return value, ticket_id
