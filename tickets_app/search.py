"""Full-text search behind a small interface: SQLite FTS5 and PostgreSQL tsvector implementations.

Both keep one search row per ticket with three texts: the subject, the public thread and the internal
notes, so one ranking covers a ticket and all its messages with the subject weighted about 3x, and a
customer's search sees only the first two. `index_for_dialect` is the one place that picks the
implementation for a database.

Queries arrive as terms (words or phrases from `tickets_app.query`), never as backend syntax: SQLite gets
every term double-quoted, PostgreSQL gets each term as a bound parameter of `phraseto_tsquery`, so nothing
a user types is parsed as query operators by either backend.

Ranking is bounded, the approach chosen for both backends and every PostgreSQL (issue 16): the newest
`RANKED_CANDIDATES` matching tickets (by id, the order both indexes keep their matches in) are ranked
(`ranked`), and older matches follow them newest first (`older_matches`); a search matching fewer tickets
is ranked exactly as before. Ranking every match cost what the matches cost: ts_rank unpacked each stored
tsvector (1.4 s for a word in 100k tickets on PostgreSQL), bm25 read each position list (0.1-0.2 s on
SQLite). The newest candidates are cheap on both: FTS5 hands out rowids in descending order, PostgreSQL
walks the primary key backwards. Considered and not taken:
- a RUM index (`ORDER BY document <=> query LIMIT n`): its ordered scan still read every match's
  positions (measured 270 ms for that word and 260 ms for a phrase on the bench corpus, against a 116 MB
  index beside the GIN index's 64 MB), and the official postgres image of docker-compose.yml and many
  managed services have no RUM, so a second path would be needed anyway;
- custom plans alone: they fix the plan, not the cost of ranking 100k matches.
Custom plans are still needed, and every statement gets one: the kit's engines never prepare statements
on the server (service_kit.db.make_engine), so a common word is never run on a plan made for a rare one.

Snippets are made for the page's tickets only (`snippets`): in the page's statement SQLite made one for
every match before sorting (the 0.4 s of a common word sorted by recency). On PostgreSQL a one-word
search's snippets headline a window of each text, which the database cuts from marks stored with the text
(tickets_app.headline_window): ts_headline parses all it is given, about 2 µs a word.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Executable,
    ScalarSelect,
    Select,
    Subquery,
    bindparam,
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

from tickets_app.headline_window import WINDOW_FUNCTION, window_marks
from tickets_app.models import Message, Ticket
from tickets_app.query import is_phrase

# Snippet markers: control characters no ticket text contains, turned into <mark> after HTML escaping.
MARK_START = "\x02"
MARK_END = "\x03"
# How many of the newest matches a search ranks; older matches follow them newest first.
RANKED_CANDIDATES = 1000
# The rank of a match past the ranked candidates: above every rank (ranks are at most 0), and lower for a
# newer ticket, so they follow the ranked ones newest first. Ticket ids stay below it (int4 on PostgreSQL).
UNRANKED_BASE = 2**31
# The texts window marks are made of (the subject and the public thread), hashed: marks count only while this
# matches the hash stored with them.
MARKED_TEXTS = "md5(concat_ws(E'\\n', subject, public_body))"
# The last position of a search row's vector in the parts of these weights (0 when they have none).
LAST_POSITION_OF = (
    "coalesce((SELECT max(p) FROM unnest(ts_filter(document, '{{{weights}}}')) AS part, "
    "unnest(part.positions) AS p), 0)"
)
# Rows given window marks per statement when many are (a rebuild, tickets_0008).
MARK_BATCH = 1000


class SearchIndex(Protocol):
    def create(self, connection: Connection) -> None:
        """Create the index structures (idempotent; run by the migration)."""

    def reindex(self, session: Session, ticket_ids: Iterable[int]) -> None:
        """Bring the index rows of these tickets up to date, inside the caller's transaction."""

    def rebuild_all(self, connection: Connection) -> None:
        """Recreate every row (after a bulk load)."""

    def matches(self, terms: Sequence[str], include_internal: bool) -> Subquery:
        """Rows (ticket_id, rank) of tickets containing every term (a term of several words is a phrase);
        lower rank is better: the newest RANKED_CANDIDATES by relevance (at most 0), then the older ones
        at UNRANKED_BASE - ticket_id. `terms` is not empty."""

    def ranked(self, session: Session, terms: Sequence[str], include_internal: bool) -> list[tuple[int, float]]:
        """(ticket_id, rank) of the newest RANKED_CANDIDATES matches, as `matches` ranks them."""

    def older_matches(self, terms: Sequence[str], include_internal: bool, before_id: int) -> Subquery:
        """Rows (ticket_id, rank) of the matches with ids below `before_id`, ranked as `matches` ranks
        those past the candidates."""

    def walks_sort_index(self, session: Session, terms: Sequence[str], include_internal: bool) -> bool:
        """Whether a list of these matches sorted by an indexed ticket column (created, updated) should walk
        that index, testing each ticket against the matches, instead of sorting every match."""

    def snippets(
        self, session: Session, terms: Sequence[str], include_internal: bool, ticket_ids: Sequence[int]
    ) -> dict[int, str]:
        """The matching passage of each of these tickets, the terms between MARK_START and MARK_END."""


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
        # The oldest ranked candidate: an uncorrelated subquery, which SQLite runs once.
        oldest_ranked = f"(SELECT min(rowid) FROM ({self._newest('rowid')}))"
        return _rows(
            f"SELECT rowid AS ticket_id, CASE WHEN rowid >= {oldest_ranked} THEN {self._bm25} "
            f"ELSE :unranked - rowid END AS rank FROM {self.table} WHERE {self.table} MATCH :match",
            {"match": self._match(terms, include_internal)},
        )

    def ranked(self, session: Session, terms: Sequence[str], include_internal: bool) -> list[tuple[int, float]]:
        """FTS5 hands out rowids newest first without a sort, and bm25 runs for those only."""
        newest = text(self._newest(f"rowid, {self._bm25}"))
        params = {"match": self._match(terms, include_internal), "candidates": RANKED_CANDIDATES}
        return [(ticket_id, rank) for ticket_id, rank in session.execute(newest, params)]

    def older_matches(self, terms: Sequence[str], include_internal: bool, before_id: int) -> Subquery:
        return _rows(
            f"SELECT rowid AS ticket_id, :unranked - rowid AS rank FROM {self.table} "
            f"WHERE {self.table} MATCH :match AND rowid < :before_id",
            {"match": self._match(terms, include_internal), "before_id": before_id},
        )

    _bm25 = f"bm25({table}, 3.0, 1.0, 1.0)"

    def _newest(self, columns: str) -> str:
        return (
            f"SELECT {columns} FROM {self.table} WHERE {self.table} MATCH :match ORDER BY rowid DESC LIMIT :candidates"
        )

    def snippets(
        self, session: Session, terms: Sequence[str], include_internal: bool, ticket_ids: Sequence[int]
    ) -> dict[int, str]:
        if not ticket_ids:
            return {}
        rows = session.execute(
            text(
                f"SELECT rowid, snippet({self.table}, -1, :mark_start, :mark_end, '…', 12) FROM {self.table} "
                f"WHERE {self.table} MATCH :match AND rowid IN :ids"
            ).bindparams(bindparam("ids", expanding=True)),
            {
                "match": self._match(terms, include_internal),
                "mark_start": MARK_START,
                "mark_end": MARK_END,
                "ids": list(ticket_ids),
            },
        )
        return {ticket_id: snippet for ticket_id, snippet in rows}

    def walks_sort_index(self, session: Session, terms: Sequence[str], include_internal: bool) -> bool:
        """When the terms match many tickets (RANKED_CANDIDATES or more). Sorting them meant one ticket
        lookup per match (0.2 s for a word in 100k tickets, 0.08 s walking); a rare word's matches are
        sorted instead, or the walk would read the whole index for them."""
        probe = f"SELECT count(*) FROM (SELECT 1 FROM {self.table} WHERE {self.table} MATCH :match LIMIT :candidates)"
        params = {"match": self._match(terms, include_internal), "candidates": RANKED_CANDIDATES}
        return bool(session.scalar(text(probe), params) == RANKED_CANDIDATES)

    @staticmethod
    def _match(terms: Sequence[str], include_internal: bool) -> str:
        expression = fts5_expression(terms)
        return expression if include_internal else "{subject public_body} : (" + expression + ")"


def _rows(statement: str, params: dict[str, Any]) -> Subquery:
    """Rows (ticket_id, rank) of a statement, with the ranking bounds it uses bound too."""
    bounds = {"candidates": RANKED_CANDIDATES, "unranked": UNRANKED_BASE}
    params = {**params, **{name: value for name, value in bounds.items() if f":{name}" in statement}}
    return text(statement).bindparams(**params).columns(column("ticket_id"), column("rank")).subquery("fts")


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
        self.create_window(connection)
        # In the row, not in TOAST: a match ranked or rechecked reads it 4-5x faster (tickets_0007).
        connection.execute(text(f"ALTER TABLE {self.table} ALTER COLUMN document SET STORAGE MAIN"))
        connection.execute(
            text(f"CREATE INDEX IF NOT EXISTS ix_{self.table}_document ON {self.table} USING gin (document)")
        )

    def create_window(self, connection: Connection) -> None:
        """The window marks' columns and the function that cuts windows with them (tickets_0008)."""
        connection.execute(
            text(
                f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS window_marks integer[], "
                "ADD COLUMN IF NOT EXISTS window_marks_md5 text"
            )
        )
        connection.exec_driver_sql(WINDOW_FUNCTION)

    def reindex(self, session: Session, ticket_ids: Iterable[int]) -> None:
        ids = sorted(set(ticket_ids))
        if ids:
            session.execute(self._upsert(documents(ids)))
            self.mark(session, ids)

    def rebuild_all(self, connection: Connection) -> None:
        connection.execute(text(f"TRUNCATE {self.table}"))
        connection.execute(self._upsert(documents(None)))
        self.mark_unmarked(connection)

    def mark_unmarked(self, connection: Connection) -> None:
        """Window marks for every row without them, MARK_BATCH rows at a time in ticket order."""
        after = 0
        while True:
            batch = connection.scalars(
                text(
                    f"SELECT ticket_id FROM {self.table} WHERE window_marks IS NULL AND ticket_id > :after "
                    "ORDER BY ticket_id LIMIT :batch"
                ),
                {"after": after, "batch": MARK_BATCH},
            ).all()
            if not batch:
                return
            self.mark(connection, batch)
            after = batch[-1]

    def mark(self, executor: Session | Connection, ticket_ids: Sequence[int]) -> None:
        """The window marks of these rows' texts as they are now, after the subject's and the public
        thread's last positions in the vector, with the hash of those texts that vouches for them (computed
        by the database, so its encoding decides, as at search time)."""
        rows = executor.execute(
            text(f"SELECT ticket_id, subject, public_body FROM {self.table} WHERE ticket_id IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
            {"ids": list(ticket_ids)},
        ).all()
        if rows:
            executor.execute(
                text(
                    f"UPDATE {self.table} SET window_marks = ARRAY[{LAST_POSITION_OF.format(weights='a')}, "
                    f"{LAST_POSITION_OF.format(weights='a,b')}] || CAST(:marks AS integer[]), "
                    f"window_marks_md5 = {MARKED_TEXTS} WHERE ticket_id = :id"
                ),
                [{"id": ticket_id, "marks": window_marks(subject, public)} for ticket_id, subject, public in rows],
            )

    def _upsert(self, rows: Select[int, str, str | None, str | None]) -> Executable:
        target = table(self.table, column("ticket_id"), *map(column, INDEXED_TEXTS))
        statement = postgresql.insert(target).from_select(list(target.c), rows)
        return statement.on_conflict_do_update(
            index_elements=["ticket_id"], set_={name: statement.excluded[name] for name in INDEXED_TEXTS}
        )

    def matches(self, terms: Sequence[str], include_internal: bool) -> Subquery:
        query, params = self._query(terms)
        # The oldest ranked candidate, an InitPlan run once.
        oldest_ranked = f"(SELECT min(ticket_id) FROM ({self._newest(query, include_internal)}) AS newest)"
        rank, unranked = self._rank(include_internal), "(:unranked - ticket_id)::float8"
        return _rows(
            f"SELECT ticket_id, CASE WHEN ticket_id >= {oldest_ranked} THEN {rank} ELSE {unranked} END AS rank "
            f"FROM {self._matching(query, include_internal)}",
            params,
        )

    def ranked(self, session: Session, terms: Sequence[str], include_internal: bool) -> list[tuple[int, float]]:
        """The newest matches walk the primary key backwards (or, for rarer terms, come from the GIN index
        and a top-N sort): ts_rank runs for those only."""
        query, params = self._query(terms)
        newest = self._newest(query, include_internal)
        statement = text(f"SELECT ticket_id, {self._rank(include_internal)} FROM ({newest}) AS newest")
        rows = session.execute(statement, {**params, "candidates": RANKED_CANDIDATES})
        return [(ticket_id, rank) for ticket_id, rank in rows]

    def older_matches(self, terms: Sequence[str], include_internal: bool, before_id: int) -> Subquery:
        query, params = self._query(terms)
        return _rows(
            "SELECT ticket_id, (:unranked - ticket_id)::float8 AS rank "
            f"FROM {self._matching(query, include_internal)} AND ticket_id < :before_id",
            {**params, "before_id": before_id},
        )

    def _newest(self, query: str, include_internal: bool) -> str:
        """The newest matching rows with their document and query."""
        return (
            f"SELECT ticket_id, document, q FROM {self._matching(query, include_internal)} "
            "ORDER BY ticket_id DESC LIMIT :candidates"
        )

    def _rank(self, include_internal: bool) -> str:
        # float8: ts_rank's float4 would not survive the cursor's round trip through JSON exactly.
        return f"-ts_rank('{self.weights}', {self._visible(include_internal)[0]}, q, 1)::float8"

    def _matching(self, query: str, include_internal: bool) -> str:
        """FROM and WHERE of the matching rows, the tsquery as `q`."""
        return f"{self.table}, (SELECT {query} AS q) AS query WHERE {self._visible(include_internal)[1]}"

    def snippets(
        self, session: Session, terms: Sequence[str], include_internal: bool, ticket_ids: Sequence[int]
    ) -> dict[int, str]:
        """ts_headline over each ticket's shown text, or for one word over the window of it that makes the
        same headline (tickets_app.headline_window): parsing the whole text was 5-9 ms a page."""
        if not ticket_ids:
            return {}
        query, params = self._query(terms)
        shown = "concat_ws(E'\\n', subject, public_body" + (", internal_body)" if include_internal else ")")
        if len(terms) == 1 and not is_phrase(terms[0]):
            statement = (
                f"SELECT ticket_id, ts_headline('{self.config}', ticket_search_window(shown, subject, public_body, "
                f"marks, {self._first_position(include_internal)}), q, :options) "
                f"FROM (SELECT ticket_id, subject, public_body, document, {shown} AS shown, "
                f"CASE WHEN window_marks_md5 = {MARKED_TEXTS} THEN window_marks END AS marks "
                f"FROM {self.table} WHERE ticket_id IN :ids) AS indexed, "
                f"(SELECT tsvector_to_array(to_tsvector('{self.config}', :term0)) AS lexemes) AS word, "
                f"(SELECT {query} AS q) AS query"
            )
        else:
            statement = (
                f"SELECT ticket_id, ts_headline('{self.config}', {shown}, q, :options) "
                f"FROM {self.table}, (SELECT {query} AS q) AS query WHERE ticket_id IN :ids"
            )
        rows = session.execute(
            text(statement).bindparams(bindparam("ids", expanding=True)),
            {"options": self.headline_options, "ids": list(ticket_ids), **params},
        )
        return {ticket_id: snippet for ticket_id, snippet in rows}

    @staticmethod
    def _first_position(include_internal: bool) -> str:
        """The word's first position in what the actor sees (a customer: up to the public thread's last one).
        Its positions are picked out of the vector without unpacking it (`setweight` marks the word's entries
        D, `ts_filter` keeps those), as unnesting a whole vector cost 0.4 ms a ticket."""
        return (
            "(SELECT min(p) FROM unnest(ts_filter(setweight(document, 'd', word.lexemes), '{d}')) AS found, "
            "unnest(found.positions) AS p" + ("" if include_internal else " WHERE p <= marks[2]") + ")"
        )

    def walks_sort_index(self, session: Session, terms: Sequence[str], include_internal: bool) -> bool:
        """Never forced: with custom plans PostgreSQL's planner walks the sort index by itself when the
        matches are many (32-52 ms p50 for a word in 100k tickets by recency) and sorts them when they are few."""
        return False

    def _query(self, terms: Sequence[str]) -> tuple[str, dict[str, str]]:
        """The tsquery of every term, all required, and its parameters. phraseto_tsquery reads its text as
        words only (websearch_to_tsquery would give "or" and "-" meaning that FTS5 here does not), and each
        term is a bound parameter: nothing typed becomes syntax."""
        params = {f"term{i}": term for i, term in enumerate(terms)}
        return " && ".join(f"phraseto_tsquery('{self.config}', :{name})" for name in params), params

    @staticmethod
    def _visible(include_internal: bool) -> tuple[str, str]:
        """(the tsvector the actor's ranking reads, the condition a ticket matches by)."""
        if include_internal:
            return "document", "document @@ q"
        # The GIN index answers the first condition, then the recheck.
        return "ts_filter(document, '{a,b}')", "document @@ q AND ts_filter(document, '{a,b}') @@ q"
