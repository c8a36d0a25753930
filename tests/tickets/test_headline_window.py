"""PostgreSQL snippets of a one-word search made from a window of the text that the database cuts from the
row's window marks (tickets_app.headline_window): the same headline as ts_headline over the whole text,
checked against a real PostgreSQL on texts made to trip the window's token bounds (compounds, URLs, hosts,
numbers, entities, stop words, non-ASCII)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from service_kit.db import make_engine
from tests.tickets.conftest import CUSTOMER, T0, ticket_change, ticket_input
from tests.tickets.test_search import recorded
from tickets_app.cli import migrate
from tickets_app.desk import Desk
from tickets_app.headline_window import CHECKPOINT_CHUNKS, chunk_bounds, window_marks
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


def written(
    session: Session, ticket: int, subject: str, public: str | None, internal: str | None, marked: bool = True
) -> None:
    """The ticket's search row holding these texts, with their window marks (as the desk writes it), or
    without new ones (``marked=False``: as a replica of the release before marks writes it)."""
    session.execute(
        text(f"UPDATE {INDEX.table} SET subject = :s, public_body = :p, internal_body = :i WHERE ticket_id = :id"),
        {"s": subject, "p": public, "i": internal, "id": ticket},
    )
    if marked:
        INDEX.mark(session, [ticket])


def window_of(session: Session, ticket: int, include_internal: bool) -> str:
    """What ticket_search_window cuts for the word, its first position worked out here from the whole vector."""
    shown = "concat_ws(E'\\n', subject, public_body" + (", internal_body)" if include_internal else ")")
    weights = "'{a,b,c}'" if include_internal else "'{a,b}'"
    return str(
        session.scalar(
            text(
                f"SELECT ticket_search_window({shown}, subject, public_body, window_marks, "
                f"(SELECT min(p) FROM unnest(ts_filter(document, {weights})) AS e, unnest(e.positions) AS p "
                f" WHERE e.lexeme = ANY(tsvector_to_array(to_tsvector('{INDEX.config}', :word))))) "
                f"FROM {INDEX.table} WHERE ticket_id = :id"
            ),
            {"word": WORD, "id": ticket},
        )
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
    gets a window around the first occurrence, cut in the snippet statement, and makes the same headline."""
    thread = " ".join(f"message {n} about the order" for n in range(200)) + " the invoice is wrong " + "ok " * 300
    written(session, ticket_id, "Billing", thread, "internal note")
    statements = recorded(session.get_bind(), lambda: INDEX.snippets(session, [WORD], True, [ticket_id]))  # type: ignore[arg-type]
    assert ["ticket_search_window(" in statement for statement, _ in statements] == [True]
    window = window_of(session, ticket_id, True)
    assert "the invoice is wrong" in window and len(window) < len(thread) // 10
    assert INDEX.snippets(session, [WORD], True, [ticket_id]) == {ticket_id: whole_headline(session, ticket_id, True)}


def test_stale_marks_are_not_used(session: Session, ticket_id: int) -> None:
    """A row written by a replica of the release before marks keeps the old marks with new texts: cut at
    them, the window would miss the word (the old thread's checkpoints fall before it). The texts no
    longer hash to what the marks were made from, so the whole text is headlined."""
    written(session, ticket_id, "Billing", "a " * 300 + "invoice", None)
    written(session, ticket_id, "Billing", "order " * 100 + "the invoice is wrong", None, marked=False)
    expected = whole_headline(session, ticket_id, False)
    assert expected is not None and "\x02invoice\x03" in expected
    assert INDEX.snippets(session, [WORD], False, [ticket_id]) == {ticket_id: expected}


def test_the_desk_writes_marks_with_every_change(session: Session) -> None:
    """A ticket created and replied to through the desk has marks that fit its texts as they are now."""
    desk = Desk(INDEX, at_risk_seconds=1800, auto_close_days=3)
    ticket = desk.create_ticket(session, CUSTOMER, ticket_input({"subject": "Invoice", "body": "first " * 40}), T0)
    desk.update_ticket(session, CUSTOMER, ticket, ticket_change({"message": {"body": "the invoice again " * 30}}), T0)
    subject, public, marks, fits = session.execute(
        text(
            f"SELECT subject, public_body, window_marks, window_marks_md5 = md5(concat_ws(E'\\n', subject, "
            f"public_body)) FROM {INDEX.table} WHERE ticket_id = :id"
        ),
        {"id": ticket.id},
    ).one()
    assert "the invoice again" in public and fits is True
    assert marks[2:] == window_marks(subject, public)
    # the subject's last position, then the public thread's: the last "again", a stop word, is not stored
    assert marks[:2] == [1, 41 + 90 - 1]


def test_window_marks_checkpoint_every_eighth_chunk() -> None:
    """A part's marks: its tail, the number of checkpoints n, then the offsets of chunks 0, 8, 16, ... and
    the most and the fewest tokens before each: here a chunk of two runs (`e-mail`) counts one or four."""
    part = "  one e-mail " + " ".join(f"w{n}" for n in range(2, 18))
    assert CHECKPOINT_CHUNKS == 8
    assert window_marks(part, None) == [
        part.index("w12 "), 3, 0, part.index("w8 "), part.index("w16 "), 0, 11, 19, 0, 8, 16,
    ]  # fmt: skip


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


def test_a_text_with_a_tag_is_taken_whole(session: Session, ticket_id: int) -> None:
    """The parser's tag token can hold whitespace (`<a href="x y">`), so no cut at whitespace is safe."""
    public = 'see <a href="x y"> ' + "word " * 100 + "invoice"
    written(session, ticket_id, "subject", public, None)
    assert window_of(session, ticket_id, False) == "subject\n" + public


def test_staff_and_customer_snippets_of_notes_differ_as_before(session: Session, ticket_id: int) -> None:
    """A word only in an internal note: staff see it marked, customers get the first words as before."""
    written(session, ticket_id, "Billing", "please check " * 40, "the invoice was sent twice")
    for include_internal in (True, False):
        expected = whole_headline(session, ticket_id, include_internal)
        assert INDEX.snippets(session, [WORD], include_internal, [ticket_id]) == {ticket_id: expected}
    assert "\x02invoice\x03" in str(INDEX.snippets(session, [WORD], True, [ticket_id])[ticket_id])


def test_marks_stop_where_positions_stop_counting() -> None:
    """A thread of 40,000 words needs no checkpoint past position 16,383 (+ the words after it): its marks
    stay the size of 16,400 words' (no window can end later), and its tail is still known."""
    thread = "order " * 40_000
    marks = window_marks(thread, None)
    assert marks[0] == len("order ") * (40_000 - 6)  # the last six words begin there
    assert marks[1] == len(marks[2:]) // 3 < 16_500 // 8


def test_a_word_past_the_last_position_is_headlined_from_the_whole_text(session: Session, ticket_id: int) -> None:
    """Positions stop counting at 16,383: a word after that many tokens has that position, which says
    nowhere, so its snippet comes from the whole text (a window at 16,383 tokens missed the word)."""
    written(session, ticket_id, "Billing", "order " * 17_000 + "the invoice is wrong", None)
    expected = whole_headline(session, ticket_id, False)
    assert expected is not None and "\x02invoice\x03" in expected
    assert INDEX.snippets(session, [WORD], False, [ticket_id]) == {ticket_id: expected}
