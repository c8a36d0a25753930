"""Ticket lists and search: views, filters, full-text ranking, sorting, cursor (keyset) pages and counts.

A list is a view (a set of tickets: open work, mine, unassigned, at risk, breached, all), narrowed by the
query's filters and words, in one order, a page at a time after (or before) a cursor. Views of staff work
are subsets of unresolved tickets, which the status index finds without reading the rest of the table; their
counts are one aggregate query over that set (`view_counts`), never a query per view or per ticket.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, literal, or_, select, true
from sqlalchemy.orm import Session, aliased

from service_kit.errors import AuthorizationError
from tickets_app.desk import Actor
from tickets_app.models import Category, Ticket, ticket_tags
from tickets_app.query import VIEWS, ParsedQuery, is_phrase, parse_query
from tickets_app.schemas import PHRASE_TOTAL_CAP, TOTAL_CAP, TicketQuery
from tickets_app.search import RANKED_CANDIDATES, SearchIndex
from tickets_app.workflow import DONE_STATUSES, OPEN_STATUSES, PRIORITIES

# Urgency of work: unresolved tickets by priority, then resolved and closed ones (by priority too), so a
# closed urgent ticket never sorts above open work.
PRIORITY_RANK = case({p: i for i, p in enumerate(PRIORITIES)}, value=Ticket.priority, else_=len(PRIORITIES)) + case(
    (Ticket.status.in_(DONE_STATUSES), len(PRIORITIES) + 1), else_=0
)
# Tickets without a deadline sort after every deadline. A time whose Unix microseconds a float holds
# exactly (below 2**53), so a cursor at it names the same position when read back.
NO_DEADLINE = datetime(2200, 1, 1, tzinfo=UTC)
DUE_KEY = func.coalesce(Ticket.sla_due_at, literal(NO_DEADLINE, Ticket.sla_due_at.type))
FILTERS = ("status", "priority", "category", "tag", "assignee", "requester", "tier")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STAFF_VIEWS = ("mine", "unassigned", "at_risk", "breached")
INDEXED_SORTS = ("created", "updated")  # ix_tickets_created, ix_tickets_updated: (time, id)
# A search's candidate ticket, tested against the list's conditions on SQLite (`_held_of`). Made once: an
# alias built per search proxied every column again (3-5 ms a call).
CANDIDATE = aliased(Ticket, name="candidate")


@dataclass
class Page:
    tickets: list[Ticket]
    snippets: dict[int, str]
    next_cursor: str | None
    prev_cursor: str | None
    total: int  # tickets in the list, counted up to total_cap + 1
    total_cap: int  # the list's cap (`total_cap`): the UI's "more than", the API's total_capped
    start: int | None  # how many come before this page, None when the total passed the cap

    @property
    def total_capped(self) -> bool:
        return self.total > self.total_cap


def total_cap(terms: list[str]) -> int:
    """How far a list of these search terms is counted: PHRASE_TOTAL_CAP with a phrase among them, whose
    exact count checks every ticket holding its words (tickets_app.schemas), else TOTAL_CAP."""
    return PHRASE_TOTAL_CAP if any(is_phrase(term) for term in terms) else TOTAL_CAP


@dataclass(frozen=True)
class SlaWindow:
    """The instant a list is drawn at and the at-risk margin (sla.at_risk_minutes), for the SLA views."""

    now: datetime
    at_risk: timedelta


def sla_breached(now: datetime) -> ColumnElement[bool]:
    """A breach recorded, or a deadline passed that the sweep has not recorded yet."""
    return or_(Ticket.sla_breached.is_(True), Ticket.sla_due_at <= now)


def sla_at_risk(window: SlaWindow) -> ColumnElement[bool]:
    """Not breached, and the earliest deadline within the margin."""
    due = Ticket.sla_due_at
    return and_(Ticket.sla_breached.is_(False), due > window.now, due <= window.now + window.at_risk)


def view_condition(view: str, actor: Actor, window: SlaWindow) -> ColumnElement[bool]:
    """Which tickets a view holds; every view but `all` is unresolved work."""
    if view == "all":
        return true()
    unresolved = Ticket.status.in_(OPEN_STATUSES)
    narrower: ColumnElement[bool] = {
        "open": true(),
        "mine": Ticket.assignee_id == actor.id,
        "unassigned": Ticket.assignee_id.is_(None),
        "at_risk": sla_at_risk(window),
        "breached": sla_breached(window.now),
    }[view]
    return and_(unresolved, narrower)


def view_counts(session: Session, actor: Actor, window: SlaWindow) -> dict[str, int]:
    """How many tickets each view of staff work holds: one pass over unresolved tickets (the status index),
    each view a SUM(CASE …) of the condition its list uses."""
    views = ("open", *STAFF_VIEWS)
    columns = [func.coalesce(func.sum(case((view_condition(v, actor, window), 1), else_=0)), 0) for v in views]
    row = session.execute(
        select(*columns).where(Ticket.status.in_(OPEN_STATUSES), Ticket.merged_into_id.is_(None))
    ).one()
    return {view: int(count) for view, count in zip(views, row, strict=True)}


def default_sort(view: str | None, parsed: ParsedQuery) -> str:
    """Relevance when searching words; the nearest deadline first in a view of work; else recent first."""
    if parsed.terms:
        return "relevance"
    return "due" if view not in (None, "all") else "-updated"


def parsed_query(query: TicketQuery) -> ParsedQuery:
    """The search box's `q` with the explicit filters, bounds and sort on top."""
    parsed = parse_query(query.q)
    for key in FILTERS:
        value = getattr(query, key)
        values = [v for v in (value or "").split(",") if v]
        if values:
            parsed.filters.setdefault(key, []).extend(values)
    for key in ("created", "updated"):
        low, high = parsed.ranges.get(key, (None, None))
        low = getattr(query, f"{key}_after") or low
        high = getattr(query, f"{key}_before") or high
        if low or high:
            parsed.ranges[key] = (low, high)
    if query.sort:
        parsed.sort = query.sort
    return parsed


def list_tickets(session: Session, index: SearchIndex, actor: Actor, query: TicketQuery, window: SlaWindow) -> Page:
    """One page of tickets the actor may see, in the query's view, filtered, ranked or sorted, after (or
    before) the query's cursor, with the list's total."""
    if query.view in STAFF_VIEWS and not actor.is_staff:
        raise AuthorizationError(f"the view {query.view} is for staff; customers have open and all")
    parsed = parsed_query(query)
    select_tickets: Select[Any] = select(Ticket).where(Ticket.merged_into_id.is_(None))
    if not actor.is_staff:
        select_tickets = select_tickets.where(Ticket.customer_id == actor.id)
    if query.view is not None:
        select_tickets = select_tickets.where(view_condition(query.view, actor, window))
    select_tickets = _apply_filters(select_tickets, parsed)
    sort = parsed.sort or default_sort(query.view, parsed)
    # Relevance without words ranks every ticket alike: the order is then by id.
    key: Any = literal(0.0)
    filtered = select_tickets
    match_ids = None
    if parsed.terms:
        fts = index.matches(parsed.terms, include_internal=actor.is_staff)
        select_tickets = select_tickets.join(fts, fts.c.ticket_id == Ticket.id)
        match_ids = fts.c.ticket_id
        key = fts.c.rank
    if sort != "relevance":
        key = {
            "due": DUE_KEY,
            "created": Ticket.created_at,
            "updated": Ticket.updated_at,
            "priority": PRIORITY_RANK,
        }[sort.lstrip("-")]
    descending = sort.startswith("-")
    listed = select_tickets.add_columns(key.label("sort_key"))

    backwards = query.page_before is not None
    cursor = query.page_before if backwards else query.page_cursor
    # Backwards, the page is read from the cursor in the reverse order, then turned round.
    read_descending = descending != backwards
    position = _decode_cursor(cursor, sort) if cursor else None
    size = query.page_size
    listed_ids: list[int] | None = None  # the whole list in order, when the ranked search read it all
    if parsed.terms and sort == "relevance":
        rows, listed_ids = _ranked_rows(
            session, index, filtered, parsed.terms, actor.is_staff, position, read_descending, size + 1
        )
    else:
        paged = listed
        if (
            parsed.terms
            and sort.lstrip("-") in INDEXED_SORTS
            and index.walks_sort_index(session, parsed.terms, actor.is_staff)
        ):
            # `+ 0`: the id is no lookup key, so the sort column's index leads and each ticket is tested.
            assert match_ids is not None
            paged = filtered.where((Ticket.id + 0).in_(select(match_ids))).add_columns(key.label("sort_key"))
        if position is not None:
            paged = paged.where(_beyond(key, *position, read_descending))
        order = (key.desc(), Ticket.id.desc()) if read_descending else (key.asc(), Ticket.id.asc())
        rows = list(session.execute(paged.order_by(*order).limit(size + 1)).all())
    more = len(rows) > size
    rows = rows[:size]
    if backwards:
        if not more:  # back at the start: the first page, full even if tickets came and went meanwhile
            first_page = query.model_copy(update={"page_before": None, "page_cursor": None})
            return list_tickets(session, index, actor, first_page, window)
        rows.reverse()
    has_next = backwards or more  # backwards, the ticket at the cursor comes next
    has_prev = more if backwards else cursor is not None
    # On the first page no ticket precedes the first row: the count need not compute the sort key.
    first_row = rows[0] if rows and cursor else None
    cap = total_cap(parsed.terms)
    start: int | None
    if listed_ids is not None:
        # Within the cap unless it is below RANKED_CANDIDATES: capped all the same, so a total means one thing.
        total = min(len(listed_ids), cap + 1)
        start = (listed_ids.index(rows[0][0].id) if rows else 0) if total <= cap else None
    else:
        total, start = _count(session, listed, key, descending, first_row, match_ids, cap)
    tickets = [row[0] for row in rows]
    snippets = (
        index.snippets(session, parsed.terms, actor.is_staff, [ticket.id for ticket in tickets]) if parsed.terms else {}
    )
    return Page(
        tickets=tickets,
        snippets=snippets,
        next_cursor=_encode_cursor(rows[-1].sort_key, rows[-1][0].id) if rows and has_next else None,
        prev_cursor=_encode_cursor(rows[0].sort_key, rows[0][0].id) if rows and has_prev else None,
        total=total,
        total_cap=cap,
        start=start,
    )


class RankedRow(NamedTuple):
    """A page row of a relevance sort, shaped as the statement rows of other sorts: (ticket, sort_key)."""

    ticket: Ticket
    sort_key: float


class Older(NamedTuple):
    """The matches past the ranked candidates: those with ids below the oldest candidate's."""

    before_id: int


def _ranked_rows(
    session: Session,
    index: SearchIndex,
    filtered: Select[Any],
    terms: list[str],
    include_internal: bool,
    position: tuple[Any, int] | None,
    descending: bool,
    limit: int,
) -> tuple[list[Any], list[int] | None]:
    """Up to `limit` rows of a relevance-sorted search after `position`: first the ranked candidates (the
    newest matches, ranked), then the older matches, newest first (backwards, the other way round); and,
    when the candidates are every match, the ids of the whole list in order, which count it.

    The candidates are ranked by the index alone, then filtered by ticket id: joined to the tickets in one
    statement, PostgreSQL hashed all 100k tickets (or all 20k open ones) to meet 1,000 candidates. The older
    matches' keys (UNRANKED_BASE - id) are above every rank (at most 0), so they are read in id order,
    which both indexes hand out without a sort, and their cursor is an id. A search with fewer matches
    than candidates is counted from its candidates too: counted in SQL, PostgreSQL hashed the 20k open
    tickets to meet a rare word's 20 matches (15 ms).
    """
    candidates = sorted(index.ranked(session, terms, include_internal), key=lambda row: (row[1], row[0]))
    # The older matches are those below the oldest candidate, when the candidates did not take every match.
    older = Older(min(ticket_id for ticket_id, _ in candidates)) if len(candidates) >= RANKED_CANDIDATES else None
    if older is None:
        return _every_candidate(session, filtered, candidates, position, descending, limit)
    if position is not None:
        after = (position[0], position[1])
        candidates = [c for c in candidates if ((c[1], c[0]) < after if descending else (c[1], c[0]) > after)]
    if descending:
        candidates.reverse()
    cursor_in_rest = position is not None and position[0] > 0
    rows: list[Any] = []
    if descending:
        rows += _older_rows(session, index, filtered, terms, include_internal, older, position, descending, limit)
    if not (cursor_in_rest and not descending):
        rows += _filtered_candidates(session, filtered, candidates, limit - len(rows))
    if not descending and len(rows) < limit:
        rows += _older_rows(
            session, index, filtered, terms, include_internal, older, position, descending, limit - len(rows)
        )
    return rows, None


def _every_candidate(
    session: Session,
    filtered: Select[Any],
    candidates: list[tuple[int, float]],
    position: tuple[Any, int] | None,
    descending: bool,
    limit: int,
) -> tuple[list[RankedRow], list[int]]:
    """`_ranked_rows` when the candidates are every match: which of them the list holds, in one statement
    (whole tickets when they are few, ids otherwise, then the page's tickets)."""
    ids = [ticket_id for ticket_id, _ in candidates]
    tickets: dict[int, Ticket] = {}
    if len(ids) <= 2 * limit:
        tickets = {t.id: t for t in session.scalars(_held_of(session, filtered, ids))}
        listed = set(tickets)
    else:
        listed = set(session.scalars(_held_of(session, filtered, ids, whole=False)))
    in_list = [(ticket_id, rank) for ticket_id, rank in candidates if ticket_id in listed]
    page = in_list
    if position is not None:
        after = (position[0], position[1])
        page = [c for c in page if ((c[1], c[0]) < after if descending else (c[1], c[0]) > after)]
    page = (page[::-1] if descending else page)[:limit]
    missing = [ticket_id for ticket_id, _ in page if ticket_id not in tickets]
    if missing:
        tickets.update((t.id, t) for t in session.scalars(select(Ticket).where(Ticket.id.in_(missing))))
    return [RankedRow(tickets[ticket_id], rank) for ticket_id, rank in page], [i for i, _ in in_list]


def _held_of(session: Session, filtered: Select[Any], ids: list[int], whole: bool = True) -> Select[Any]:
    """The tickets (or only their ids) of `ids` that the list `filtered` holds.

    On SQLite each is looked up by its id and tested against the list's conditions (a correlated EXISTS):
    as `filtered.where(id IN ids)` SQLite, which keeps no statistics here, read a filter's index instead,
    all 20,000 open tickets for a rare word's 20 candidates with `status:open` (15 ms against 0.6 ms by
    id, at 100k tickets). PostgreSQL plans by its statistics and looks the ids up either way; the EXISTS
    became a semi-join there, slower (4 against 11 ms), so it keeps the plain condition."""
    if session.get_bind().dialect.name != "sqlite":
        plain = filtered if whole else filtered.with_only_columns(Ticket.id)
        return plain.where(Ticket.id.in_(ids))
    held = filtered.with_only_columns(literal(1)).where(Ticket.id == CANDIDATE.id).exists()
    return select(CANDIDATE if whole else CANDIDATE.id).where(CANDIDATE.id.in_(ids), held)


def _filtered_candidates(
    session: Session, filtered: Select[Any], candidates: list[tuple[int, float]], limit: int
) -> list[RankedRow]:
    """The first `limit` candidates, in their order, that pass the list's conditions: read in chunks that
    double, starting at twice the page, so a page without filters is one statement of a few dozen tickets
    however many candidates there are."""
    rows: list[RankedRow] = []
    start, chunk = 0, 2 * limit
    while len(rows) < limit and start < len(candidates):
        ranks = dict(candidates[start : start + chunk])
        passing = {t.id: t for t in session.scalars(_held_of(session, filtered, list(ranks)))}
        rows += [RankedRow(passing[ticket_id], rank) for ticket_id, rank in ranks.items() if ticket_id in passing]
        start, chunk = start + chunk, chunk * 2
    return rows[:limit]


def _older_rows(
    session: Session,
    index: SearchIndex,
    filtered: Select[Any],
    terms: list[str],
    include_internal: bool,
    older: Older | None,
    position: tuple[Any, int] | None,
    descending: bool,
    limit: int,
) -> list[Any]:
    """Up to `limit` matches older than the ranked candidates, after `position`, newest first (oldest
    first when `descending`: read backwards)."""
    cursor_in_rest = position is not None and position[0] > 0
    if older is None or (descending and not cursor_in_rest):
        return []  # every match is a candidate, or before a ranked cursor there are only ranked rows
    fts = index.older_matches(terms, include_internal, older.before_id)
    rows = filtered.join(fts, fts.c.ticket_id == Ticket.id).add_columns(fts.c.rank.label("sort_key"))
    if cursor_in_rest:
        assert position is not None
        rows = rows.where(fts.c.ticket_id > position[1] if descending else fts.c.ticket_id < position[1])
    order = fts.c.ticket_id.asc() if descending else fts.c.ticket_id.desc()
    return list(session.execute(rows.order_by(order).limit(limit)).all())


def _beyond(key: Any, value: Any, last_id: int, descending: bool) -> ColumnElement[bool]:
    """Rows after (key, id) = (value, last_id) in the order given."""
    if descending:
        return or_(key < value, and_(key == value, Ticket.id < last_id))
    return or_(key > value, and_(key == value, Ticket.id > last_id))


def _count(
    session: Session, listed: Select[Any], key: Any, descending: bool, first: Any, matches: Any, cap: int
) -> tuple[int, int | None]:
    """(the list's total up to `cap` + 1, how many precede the page's first row, when one is given and the
    total is within the cap) in one query.

    A search is counted in the order its index hands out matches (`matches`, the ticket id column of the
    search's matches). Unordered, SQLite read the filtered tickets first and ran the full-text match once
    per ticket: 28 s for a common word with status:open among 30,000 tickets, 0.2 s this way, which is
    the page's own plan. PostgreSQL plans either alike (measured).
    """
    if first is None:
        ahead: ColumnElement[Any] = literal(0)
    else:
        precedes = _beyond(key, first.sort_key, first[0].id, not descending)
        ahead = case((precedes, 1), else_=0)
    counted = listed.with_only_columns(ahead.label("ahead"))
    if matches is not None:
        counted = counted.order_by(matches)
    capped = counted.limit(cap + 1).subquery()
    total, before = session.execute(select(func.count(), func.coalesce(func.sum(capped.c.ahead), 0))).one()
    return int(total), (int(before) if total <= cap else None)


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
    if sort.lstrip("-") not in ("created", "updated", "due"):
        return value, int(raw_id)
    try:
        return EPOCH + timedelta(microseconds=value), int(raw_id)
    except OverflowError:
        return (datetime.max if value > 0 else datetime.min).replace(tzinfo=UTC), int(raw_id)


assert set(STAFF_VIEWS) | {"open", "all"} == set(VIEWS)
