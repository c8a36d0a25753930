"""Full-text search behind a small interface: SQLite FTS5 and PostgreSQL tsvector implementations.

Both keep one search row per ticket with three texts: the subject, the public thread and the internal
notes, so one ranking covers a ticket and all its messages with the subject weighted about 3x, and a
customer's search sees only the first two. `index_for_dialect` is the one place that picks the
implementation for a database.

Queries arrive as terms (words or phrases from `tickets_app.query`), never as backend syntax: SQLite gets
every term double-quoted, PostgreSQL gets each term as a bound parameter of `phraseto_tsquery`, so nothing
a user types is parsed as query operators by either backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from sqlalchemy import (
    Connection,
    Executable,
    ScalarSelect,
    Select,
    Subquery,
    column,
    delete,
    func,
    insert,
    select,
    table,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from tickets_app.models import Message, Ticket

# Snippet markers: control characters no ticket text contains, turned into <mark> after HTML escaping.
MARK_START = "\x02"
MARK_END = "\x03"


class SearchIndex(Protocol):
    def create(self, connection: Connection) -> None:
        """Create the index structures (idempotent; run by the migration)."""

    def reindex(self, session: Session, ticket_ids: Iterable[int]) -> None:
        """Bring the index rows of these tickets up to date, inside the caller's transaction."""

    def rebuild_all(self, connection: Connection) -> None:
        """Recreate every row (after a bulk load)."""

    def matches(self, terms: Sequence[str], include_internal: bool) -> Subquery:
        """Rows (ticket_id, rank, snippet) of tickets containing every term (a term of several words is a
        phrase); lower rank is better. `terms` is not empty."""


def index_for_dialect(dialect_name: str) -> SearchIndex:
    """The search implementation of a database (SQLAlchemy dialect name: `engine.dialect.name`)."""
    if dialect_name == "sqlite":
        return SqliteFtsIndex()
    if dialect_name == "postgresql":
        return PostgresFtsIndex()
    raise ValueError(f"the support desk's search supports sqlite and postgresql, not {dialect_name}")


INDEXED_TEXTS = ("subject", "public_body", "internal_body")


def documents(ticket_ids: Sequence[int] | None) -> Select[int, str, str | None, str | None]:
    """(ticket id, subject, public thread, internal notes) of these tickets (all when None): what both
    indexes hold. Messages are joined with newlines, as one text per kind."""

    def thread(internal: bool) -> ScalarSelect[str | None]:
        return (
            select(func.aggregate_strings(Message.body, "\n"))
            .where(Message.ticket_id == Ticket.id, Message.internal.is_(internal))
            .scalar_subquery()
        )

    query = select(Ticket.id, Ticket.subject, thread(False), thread(True))
    return query if ticket_ids is None else query.where(Ticket.id.in_(ticket_ids))


class SqliteFtsIndex:
    """FTS5 with porter stemming and diacritics folded."""

    table = "ticket_fts"

    def create(self, connection: Connection) -> None:
        connection.execute(
            text(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.table} USING fts5("
                "subject, public_body, internal_body, "
                "tokenize='porter unicode61 remove_diacritics 2')"
            )
        )

    def reindex(self, session: Session, ticket_ids: Iterable[int]) -> None:
        ids = sorted(set(ticket_ids))
        if not ids:
            return
        rows = table(self.table, column("rowid"), *map(column, INDEXED_TEXTS))
        session.execute(delete(rows).where(rows.c.rowid.in_(ids)))
        session.execute(insert(rows).from_select(list(rows.c), documents(ids)))

    def rebuild_all(self, connection: Connection) -> None:
        """Recreate every row; then merge FTS5's segments, which per-ticket inserts leave many of."""
        rows = table(self.table, column("rowid"), *map(column, INDEXED_TEXTS))
        connection.execute(delete(rows))
        connection.execute(insert(rows).from_select(list(rows.c), documents(None)))
        connection.execute(text(f"INSERT INTO {self.table}({self.table}) VALUES ('optimize')"))

    def matches(self, terms: Sequence[str], include_internal: bool) -> Subquery:
        expression = fts5_expression(terms)
        match = expression if include_internal else "{subject public_body} : (" + expression + ")"
        return (
            text(
                f"SELECT rowid AS ticket_id, bm25({self.table}, 3.0, 1.0, 1.0) AS rank, "
                f"snippet({self.table}, -1, :mark_start, :mark_end, '…', 12) AS snippet "
                f"FROM {self.table} WHERE {self.table} MATCH :match"
            )
            .bindparams(match=match, mark_start=MARK_START, mark_end=MARK_END)
            .columns(column("ticket_id"), column("rank"), column("snippet"))
            .subquery("fts")
        )


def fts5_expression(terms: Sequence[str]) -> str:
    """An FTS5 MATCH string: every term double-quoted (quotes doubled), all required."""
    return " ".join('"' + term.replace('"', '""') + '"' for term in terms)


class PostgresFtsIndex:
    """A weighted tsvector in a side table with a GIN index; English stemming with accents folded.

    The text search configuration runs `unaccent` before the English stemmer, so "invóices" and "invoice"
    meet. The tsvector is a generated column (the configuration is named as a constant, which keeps
    `to_tsvector` immutable), weighted A for the subject, B for the public thread and C for internal notes:
    customers match and rank on A and B only (`ts_filter`), staff on everything.
    """

    table = "ticket_search"
    config = "ticket_search_english"
    # ts_rank's weights for {D, C, B, A}; each at most 1.0, so the subject is 1.0 against 0.3 for messages.
    weights = "{0, 0.3, 0.3, 1.0}"
    headline_options = f"StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=12, MinWords=4, MaxFragments=1"

    def create(self, connection: Connection) -> None:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS unaccent"))
        connection.execute(
            text(
                # CREATE TEXT SEARCH CONFIGURATION has no IF NOT EXISTS.
                "DO $$ BEGIN "
                f"IF NOT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = '{self.config}') THEN "
                f"CREATE TEXT SEARCH CONFIGURATION {self.config} (COPY = english); "
                f"ALTER TEXT SEARCH CONFIGURATION {self.config} "
                "ALTER MAPPING FOR hword, hword_part, word WITH unaccent, english_stem; "
                "END IF; END $$"
            )
        )
        vector = " || ".join(
            f"setweight(to_tsvector('{self.config}', coalesce({name}, '')), '{weight}')"
            for name, weight in zip(INDEXED_TEXTS, "ABC", strict=True)
        )
        connection.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "ticket_id integer PRIMARY KEY REFERENCES tickets (id) ON DELETE CASCADE, "
                "subject text NOT NULL, public_body text, internal_body text, "
                f"document tsvector GENERATED ALWAYS AS ({vector}) STORED)"
            )
        )
        connection.execute(
            text(f"CREATE INDEX IF NOT EXISTS ix_{self.table}_document ON {self.table} USING gin (document)")
        )

    def reindex(self, session: Session, ticket_ids: Iterable[int]) -> None:
        ids = sorted(set(ticket_ids))
        if ids:
            session.execute(self._upsert(documents(ids)))

    def rebuild_all(self, connection: Connection) -> None:
        connection.execute(text(f"TRUNCATE {self.table}"))
        connection.execute(self._upsert(documents(None)))

    def _upsert(self, rows: Select[int, str, str | None, str | None]) -> Executable:
        target = table(self.table, column("ticket_id"), *map(column, INDEXED_TEXTS))
        statement = postgresql.insert(target).from_select(list(target.c), rows)
        return statement.on_conflict_do_update(
            index_elements=["ticket_id"], set_={name: statement.excluded[name] for name in INDEXED_TEXTS}
        )

    def matches(self, terms: Sequence[str], include_internal: bool) -> Subquery:
        # phraseto_tsquery reads its text as words only (websearch_to_tsquery would give "or" and "-" meaning
        # that FTS5 here does not), and each term is a bound parameter: nothing typed becomes syntax.
        params = {f"term{i}": term for i, term in enumerate(terms)}
        query = " && ".join(f"phraseto_tsquery('{self.config}', :{name})" for name in params)
        if include_internal:
            visible, shown = "document", "concat_ws(E'\\n', subject, public_body, internal_body)"
            condition = "document @@ q"
        else:
            visible, shown = "ts_filter(document, '{a,b}')", "concat_ws(E'\\n', subject, public_body)"
            condition = f"document @@ q AND {visible} @@ q"  # the GIN index answers the first, then recheck
        # float8: ts_rank's float4 would not survive the cursor's round trip through JSON exactly.
        return (
            text(
                f"SELECT ticket_id, -ts_rank('{self.weights}', {visible}, q, 1)::float8 AS rank, "
                f"ts_headline('{self.config}', {shown}, q, :options) AS snippet "
                f"FROM {self.table}, (SELECT {query} AS q) AS query WHERE {condition}"
            )
            .bindparams(options=self.headline_options, **params)
            .columns(column("ticket_id"), column("rank"), column("snippet"))
            .subquery("fts")
        )
