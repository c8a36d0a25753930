"""Search and lists on both backends (SQLite FTS5, a real PostgreSQL): ranking, filters, hostile input,
visibility, cursor pages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service_kit.db import make_engine
from service_kit.errors import ValidationError
from tests.tickets.conftest import AGENT, CUSTOMER, OTHER_CUSTOMER, T0, ticket_change, ticket_input, ticket_query
from tickets_app.cli import migrate
from tickets_app.desk import Actor, Desk
from tickets_app.listing import list_tickets
from tickets_app.models import Ticket
from tickets_app.query import parse_query
from tickets_app.search import MARK_END, MARK_START, fts5_expression, index_for_dialect


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One database per backend for the module, migrated by Alembic as in production."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('search') / 'desk.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_server").fresh_database("tickets_search")
    migrate(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """Nothing here commits (the desk only flushes), so closing the session rolls each test back."""
    with Session(engine) as db:
        yield db


@pytest.fixture
def desk(engine: Engine) -> Desk:
    return Desk(index_for_dialect(engine.dialect.name), at_risk_seconds=1800, auto_close_days=3)


def make(
    desk: Desk,
    session: Session,
    subject: str,
    body: str,
    actor: Actor = CUSTOMER,
    minutes: int = 0,
    **extra: object,
) -> Ticket:
    return desk.create_ticket(
        session, actor, ticket_input({"subject": subject, "body": body, **extra}), T0 + timedelta(minutes=minutes)
    )


def search(desk: Desk, session: Session, actor: Actor, **args: str) -> list[int]:
    return [t.id for t in list_tickets(session, desk.index, actor, ticket_query(args)).tickets]


@pytest.fixture
def corpus(desk: Desk, session: Session) -> dict[str, Ticket]:
    tickets = {
        "subject": make(desk, session, "Invoice shows wrong VAT", "please check", priority="urgent", tags=["billing"]),
        "body": make(desk, session, "Question", "my invoice was sent twice", minutes=1, priority="low"),
        "other": make(desk, session, "Webhook retries", "signature mismatch", OTHER_CUSTOMER, minutes=2),
        "phrase": make(desk, session, "Rate limit", "we hit the daily quota at noon", minutes=3),
    }
    desk.update_ticket(
        session,
        AGENT,
        tickets["other"],
        ticket_change({"message": {"body": "internal: customer is on legacy plan zebra", "internal": True}}),
        T0,
    )
    return tickets


def test_subject_match_ranks_above_body_match(desk: Desk, session: Session, corpus: dict[str, Ticket]) -> None:
    assert search(desk, session, AGENT, q="invoice") == [corpus["subject"].id, corpus["body"].id]


def test_stemming_and_diacritics(desk: Desk, session: Session, corpus: dict[str, Ticket]) -> None:
    assert search(desk, session, AGENT, q="invoices") == [corpus["subject"].id, corpus["body"].id]
    assert search(desk, session, AGENT, q="invóice") == [corpus["subject"].id, corpus["body"].id]


def test_query_language_filters_and_phrase(desk: Desk, session: Session, corpus: dict[str, Ticket]) -> None:
    assert search(desk, session, AGENT, q="invoice priority:low") == [corpus["body"].id]
    assert search(desk, session, AGENT, q="tag:billing status:open") == [corpus["subject"].id]
    assert search(desk, session, AGENT, q='"daily quota"') == [corpus["phrase"].id]
    assert search(desk, session, AGENT, q='"quota daily"') == []
    assert search(desk, session, AGENT, q="requester:cust-2") == [corpus["other"].id]
    assert search(desk, session, AGENT, q="tier:professional sort:created") == [
        corpus["subject"].id,
        corpus["body"].id,
        corpus["phrase"].id,
    ]


@pytest.mark.parametrize(
    "hostile",
    [
        '"',
        "NEAR(",
        "invoice OR",
        "*",
        "AND AND",
        "col:invoice",
        "{subject}: x",
        "^invoice",
        "' OR 1=1 --",
        "\x00",
        "ä" * 2000,
        ")))(((",
        'sort:"',
        "created>notadate",
        "-",
        "invoice NOT",
        "inv\x00oice",
        "'",
        "\\",
        "invoice:*",
        "!invoice & (quota | zebra)",
        "daily <-> quota",
        "invoice:AB",
        "$$ ; DROP TABLE tickets; --",
        "% _",
        "the of and",
        "🙂",
    ],
)
def test_hostile_queries_never_break(desk: Desk, session: Session, corpus: dict[str, Ticket], hostile: str) -> None:
    found = search(desk, session, AGENT, q=hostile)
    assert set(found) <= {ticket.id for ticket in corpus.values()}
    assert search(desk, session, AGENT, q="quota") == [corpus["phrase"].id]  # the transaction is still usable


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("invoice -please", ["subject"]),  # not a websearch NOT: "please" is required
        ("!please invoice", ["subject"]),
        ("webhook | invoice", []),  # not an OR
        ("webhook OR invoice", []),
        ("quota & -noon", ["phrase"]),
    ],
)
def test_operator_characters_are_plain_text(
    desk: Desk, session: Session, corpus: dict[str, Ticket], query: str, expected: list[str]
) -> None:
    assert search(desk, session, AGENT, q=query) == [corpus[name].id for name in expected]


def test_customer_sees_own_tickets_and_not_internal_notes(
    desk: Desk, session: Session, corpus: dict[str, Ticket]
) -> None:
    assert search(desk, session, AGENT, q="zebra") == [corpus["other"].id]
    assert search(desk, session, OTHER_CUSTOMER, q="zebra") == []
    assert search(desk, session, OTHER_CUSTOMER) == [corpus["other"].id]
    assert corpus["other"].id not in search(desk, session, CUSTOMER)


def test_internal_notes_never_match_rank_or_show_for_customers(desk: Desk, session: Session) -> None:
    twin = make(desk, session, "Refund request", "please refund order 77")
    noted = make(desk, session, "Refund request", "please refund order 77", minutes=1)
    for ticket, note in ((noted, "refund " * 8), (twin, "waiting " * 8)):  # notes of equal length
        desk.update_ticket(
            session, AGENT, ticket, ticket_change({"message": {"body": note + "fraud suspected", "internal": True}}), T0
        )
    assert search(desk, session, AGENT, q="refund fraud") == [noted.id, twin.id]  # across public and internal
    assert search(desk, session, CUSTOMER, q="refund fraud") == []
    assert search(desk, session, CUSTOMER, q="fraud") == []
    # Same public text, so the same rank and the id breaks the tie: the note's "refund"s must not lift `noted`.
    assert search(desk, session, CUSTOMER, q="refund") == [twin.id, noted.id]
    snippets = list_tickets(session, desk.index, CUSTOMER, ticket_query({"q": "refund"})).snippets
    assert snippets and not any("fraud" in snippet for snippet in snippets.values())


def test_snippet_marks_the_match(desk: Desk, session: Session, corpus: dict[str, Ticket]) -> None:
    page = list_tickets(session, desk.index, AGENT, ticket_query({"q": "quota"}))
    assert f"{MARK_START}quota{MARK_END}" in page.snippets[corpus["phrase"].id]


def test_cursor_pages_cover_everything_once(desk: Desk, session: Session) -> None:
    ids = [make(desk, session, f"ticket {i}", "paging body", minutes=i % 3).id for i in range(7)]
    for sort, words in [(s, "paging") for s in ("created", "-updated", "priority", "relevance")] + [("relevance", "")]:
        seen: list[int] = []
        args = {"page[size]": "3", "sort": sort, "q": words}
        while True:
            page = list_tickets(session, desk.index, AGENT, ticket_query(args))
            seen += [t.id for t in page.tickets]
            if page.next_cursor is None:
                break
            args["page[cursor]"] = page.next_cursor
        assert sorted(seen) == ids, (sort, words)
        assert len(seen) == len(set(seen)), (sort, words)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"page[size]": "0"}, "page[size]"),
        ({"page[size]": "101"}, "page[size]"),
        ({"page[size]": "x"}, "page[size]"),
        ({"page[cursor]": "garbage!!"}, "page[cursor]"),
        ({"page[cursor]": "1~2~3"}, "page[cursor]"),
        ({"sort": "nonsense"}, "sort"),
        ({"created_after": "yesterday"}, "created_after"),
    ],
)
def test_bad_list_arguments_name_the_field(desk: Desk, session: Session, args: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        search(desk, session, AGENT, **args)
    assert field in caught.value.details


@pytest.mark.parametrize(
    ("cursor", "after_everything"),
    [("1e999~5", True), ("99999999999999999999~5", True), ("-99999999999999999999~5", False)],
)
def test_a_cursor_beyond_every_time_is_a_position_not_an_error(
    desk: Desk, session: Session, corpus: dict[str, Ticket], cursor: str, after_everything: bool
) -> None:
    """Any cursor of the documented shape is a position: a time beyond a datetime's range lies past the end."""
    everything = sorted(ticket.id for ticket in corpus.values())
    ascending = sorted(search(desk, session, AGENT, sort="created", **{"page[cursor]": cursor}))
    descending = sorted(search(desk, session, AGENT, sort="-created", **{"page[cursor]": cursor}))
    assert (ascending, descending) == (([], everything) if after_everything else (everything, []))


def test_parse_query_quotes_every_term() -> None:
    parsed = parse_query('status:open,waiting NEAR(a "b c" d*')
    assert parsed.filters == {"status": ["open", "waiting"]}
    assert fts5_expression(parsed.terms) == '"NEAR(a" "b c" "d*"'


def test_unknown_database_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="mysql"):
        index_for_dialect("mysql")
