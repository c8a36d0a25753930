"""Full-text search behind a small interface; SQLite FTS5 is the implementation here.

One FTS row per ticket (rowid = ticket id) with three columns: the subject, the public thread and the
internal notes, so one bm25 ranks a ticket by all its messages with the subject weighted 3x, and a
customer's search is restricted to the first two columns. A PostgreSQL implementation would fill the
same three methods with a generated tsvector and websearch_to_tsquery.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import Connection, Subquery, column, text
from sqlalchemy.orm import Session

# Snippet markers: control characters no ticket text contains, turned into <mark> after HTML escaping.
MARK_START = "\x02"
MARK_END = "\x03"


class SearchIndex(Protocol):
    def create(self, connection: Connection) -> None:
        """Create the index structures (idempotent; run by the migration)."""

    def reindex(self, session: Session, ticket_ids: Iterable[int]) -> None:
        """Bring the index rows of these tickets up to date, inside the caller's transaction."""

    def matches(self, expression: str, include_internal: bool) -> Subquery:
        """Rows (ticket_id, rank, snippet) for a quoted FTS expression; lower rank is better."""


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
        params = {f"id{i}": ticket_id for i, ticket_id in enumerate(ids)}
        placeholders = ", ".join(f":{name}" for name in params)
        session.execute(text(f"DELETE FROM {self.table} WHERE rowid IN ({placeholders})"), params)
        session.execute(
            text(
                f"INSERT INTO {self.table} (rowid, subject, public_body, internal_body) "
                "SELECT t.id, t.subject, "
                "(SELECT group_concat(m.body, char(10)) FROM messages m "
                " WHERE m.ticket_id = t.id AND NOT m.internal), "
                "(SELECT group_concat(m.body, char(10)) FROM messages m "
                " WHERE m.ticket_id = t.id AND m.internal) "
                f"FROM tickets t WHERE t.id IN ({placeholders})"
            ),
            params,
        )

    def rebuild_all(self, connection: Connection) -> None:
        """Recreate every row (after a bulk load); cheaper than per-ticket reindexing."""
        connection.execute(text(f"DELETE FROM {self.table}"))
        connection.execute(
            text(
                f"INSERT INTO {self.table} (rowid, subject, public_body, internal_body) "
                "SELECT t.id, t.subject, p.body, i.body FROM tickets t "
                "LEFT JOIN (SELECT ticket_id, group_concat(body, char(10)) AS body FROM messages "
                "           WHERE NOT internal GROUP BY ticket_id) p ON p.ticket_id = t.id "
                "LEFT JOIN (SELECT ticket_id, group_concat(body, char(10)) AS body FROM messages "
                "           WHERE internal GROUP BY ticket_id) i ON i.ticket_id = t.id"
            )
        )
        connection.execute(text(f"INSERT INTO {self.table}({self.table}) VALUES ('optimize')"))

    def matches(self, expression: str, include_internal: bool) -> Subquery:
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
