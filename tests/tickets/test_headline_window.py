"""PostgreSQL snippets of a one-word search made from a window of the text (tickets_app.headline_window):
the same headline as ts_headline over the whole text, checked against a real PostgreSQL on texts made to
trip the window's token bounds (compounds, URLs, hosts, numbers, entities, stop words, non-ASCII)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from service_kit.db import make_engine
from tests.tickets.conftest import CUSTOMER, T0, ticket_input
from tests.tickets.test_search import recorded
from tickets_app.cli import migrate
from tickets_app.desk import Desk
from tickets_app.headline_window import chunk_bounds, headline_window
from tickets_app.search import PostgresFtsIndex

pytestmark = pytest.mark.integration
INDEX = PostgresFtsIndex()
WORD = "invoice"
# Pieces of text: the searched word in the forms that stem to it, words and stop words, and chunks the
# parser makes several tokens, or none, of.
PIECES = [
    "invoice", "Invoices", "invóice", "invoicing", "INVOICE.", "(invoice),", "re-invoice", "invoice-e-mail",
    "the", "a", "of", "and", "was", "please", "check", "order", "refund", "sent", "twice", "payment",
    "e-mail", "self-service-portal", "x.com", "https://x.com/invoice/a-b", "a@b.com", "/usr/invoice",
    "1.5", "v1.2.3", "-5", "42", "ab12", "&amp;", "—", "…", "naïve", "日本", "--", ".", ",", "!!", "'", "_",
    "http://", "x" * 30,
]  # fmt: skip
SEPARATORS = [" ", " ", " ", "  ", "\n", "\t", " , ", ". "]


@pytest.fixture(scope="module")
def engine(postgres_server: object) -> Iterator[Engine]:
    url = postgres_server.fresh_database("tickets_headline")  # type: ignore[attr-defined]
    migrate(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as db:
        yield db


@pytest.fixture
def ticket_id(session: Session) -> int:
    """One ticket whose search row each example rewrites (its tsvector is generated from the texts)."""
    desk = Desk(INDEX, at_risk_seconds=1800, auto_close_days=3)
    return desk.create_ticket(session, CUSTOMER, ticket_input({"subject": "s", "body": "b"}), T0).id


def whole_headline(session: Session, ticket: int, include_internal: bool) -> str | None:
    """ts_headline over the whole shown text: what the snippet was before windows, and must stay."""
    shown = "concat_ws(E'\\n', subject, public_body" + (", internal_body)" if include_internal else ")")
    return session.scalar(
        text(
            f"SELECT ts_headline('{INDEX.config}', {shown}, phraseto_tsquery('{INDEX.config}', :word), :options) "
            f"FROM {INDEX.table} WHERE ticket_id = :id"
        ),
        {"word": WORD, "options": INDEX.headline_options, "id": ticket},
    )


def written(session: Session, ticket: int, subject: str, public: str | None, internal: str | None) -> None:
    session.execute(
        text(f"UPDATE {INDEX.table} SET subject = :s, public_body = :p, internal_body = :i WHERE ticket_id = :id"),
        {"s": subject, "p": public, "i": internal, "id": ticket},
    )


def texts(size: int) -> st.SearchStrategy[str]:
    pieces = st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(SEPARATORS)), max_size=size)
    return pieces.map(lambda parts: "".join(piece + separator for piece, separator in parts))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    subject=texts(8),
    public=st.none() | texts(120),
    internal=st.none() | texts(40),
    include_internal=st.booleans(),
)
def test_a_one_word_snippet_is_the_whole_texts_headline(
    session: Session, ticket_id: int, subject: str, public: str | None, internal: str | None, include_internal: bool
) -> None:
    written(session, ticket_id, subject, public, internal)
    expected = whole_headline(session, ticket_id, include_internal)
    assert INDEX.snippets(session, [WORD], include_internal, [ticket_id]) == {ticket_id: expected}


def test_a_one_word_snippet_parses_a_window_not_the_whole_thread(session: Session, ticket_id: int) -> None:
    """ts_headline parsed each page ticket's whole text (5-9 ms for 20 at 100k tickets); for one word it
    gets a window around the first occurrence, and makes the same headline of it."""
    thread = " ".join(f"message {n} about the order" for n in range(200)) + " the invoice is wrong " + "ok " * 300
    written(session, ticket_id, "Billing", thread, "internal note")
    statements = recorded(session.get_bind(), lambda: INDEX.snippets(session, [WORD], True, [ticket_id]))  # type: ignore[arg-type]
    headlined = [parameters for statement, parameters in statements if "ts_headline" in statement]
    assert len(headlined) == 1
    (window,) = headlined[0]["texts"]
    assert "invoice" in window and len(window) < len(thread) // 10
    assert INDEX.snippets(session, [WORD], True, [ticket_id]) == {ticket_id: whole_headline(session, ticket_id, True)}


@pytest.mark.parametrize("chunk", [*PIECES, "a-b-c-d", "localhost/x", "ab-12", "x.y.z", "<b>x</b>", "é-é"])
def test_chunk_bounds_hold_the_parsers_count(session: Session, chunk: str) -> None:
    """How many tokens PostgreSQL's parser makes of a chunk that the configuration maps (each a position)
    lies within chunk_bounds."""
    mapped = session.scalar(
        text(f"SELECT count(*) FROM ts_debug('{INDEX.config}', :chunk) WHERE cardinality(dictionaries) > 0"),
        {"chunk": chunk},
    )
    most, least = chunk_bounds(chunk)
    assert least <= mapped <= most, (chunk, mapped)


def test_a_text_with_a_tag_is_taken_whole() -> None:
    """The parser's tag token can hold whitespace (`<a href="x y">`), so no cut at whitespace is safe."""
    parts = ["subject", 'see <a href="x y"> ' + "word " * 100 + "invoice"]
    assert headline_window(parts, 1, 103) == (0, len("\n".join(parts)))


def test_staff_and_customer_snippets_of_notes_differ_as_before(session: Session, ticket_id: int) -> None:
    """A word only in an internal note: staff see it marked, customers get the first words as before."""
    written(session, ticket_id, "Billing", "please check " * 40, "the invoice was sent twice")
    for include_internal in (True, False):
        expected = whole_headline(session, ticket_id, include_internal)
        assert INDEX.snippets(session, [WORD], include_internal, [ticket_id]) == {ticket_id: expected}
    assert "\x02invoice\x03" in str(INDEX.snippets(session, [WORD], True, [ticket_id])[ticket_id])


def test_a_word_past_the_last_position_is_headlined_from_the_whole_text(session: Session, ticket_id: int) -> None:
    """Positions stop counting at 16,383: a word after that many tokens has that position, which says
    nowhere, so its snippet comes from the whole text (a window at 16,383 tokens missed the word)."""
    written(session, ticket_id, "Billing", "order " * 17_000 + "the invoice is wrong", None)
    expected = whole_headline(session, ticket_id, False)
    assert expected is not None and "\x02invoice\x03" in expected
    assert INDEX.snippets(session, [WORD], False, [ticket_id]) == {ticket_id: expected}
