"""Reads of PostgreSQL's statistics for the query exporter: thin I/O around the pure cores.

PostgreSQL 14 or later (``toplevel`` and ``pg_stat_statements_info``; the PG13 column names
``total_exec_time`` and ``shared_blks_*`` are the ones used). The exporter's role needs
``pg_read_all_stats`` to see other roles' statements (without it their ``queryid`` is NULL and they are
left out).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from exporters.queries.topk import Counters, Entry, Snapshot

QUERY_TEXT_CHARS = 4096  # longer texts are cut before fingerprinting: two statements alike that far are one

STATEMENTS = text(
    """
    SELECT s.userid, s.dbid, s.queryid, s.toplevel, left(s.query, :text_chars) AS query,
           s.calls, s.total_exec_time, s.rows, s.shared_blks_hit, s.shared_blks_read
    FROM pg_stat_statements AS s
    WHERE s.queryid IS NOT NULL AND s.toplevel  -- with track = all, nested statements' time is in their caller's
      AND (cardinality(CAST(:databases AS text[])) = 0
           OR s.dbid IN (SELECT oid FROM pg_database WHERE datname = ANY(CAST(:databases AS text[]))))
    """
).bindparams(bindparam("databases"), bindparam("text_chars"))
STATEMENTS_INFO = text("SELECT extract(epoch FROM stats_reset) AS stats_reset, dealloc FROM pg_stat_statements_info")
EXTENSIONS = text("SELECT extname FROM pg_extension WHERE extname IN ('pg_stat_statements', 'hypopg')")


@dataclass(frozen=True)
class StatementsRead:
    snapshot: Snapshot
    deallocations: int  # entries evicted since the last reset (pg_stat_statements.max reached)


def installed_extensions(connection: Connection) -> set[str]:
    """Which of pg_stat_statements and hypopg ``CREATE EXTENSION`` added to the connected database."""
    return {str(name) for (name,) in connection.execute(EXTENSIONS)}


def read_statements(connection: Connection, databases: list[str]) -> StatementsRead:
    """One snapshot of ``pg_stat_statements`` (only ``databases``' statements, unless empty: all)."""
    rows = connection.execute(STATEMENTS, {"databases": databases, "text_chars": QUERY_TEXT_CHARS})
    entries = [
        Entry(
            key=(row.userid, row.dbid, row.queryid, bool(row.toplevel)),
            query=row.query or "",
            counters=Counters(
                calls=row.calls,
                exec_seconds=row.total_exec_time / 1000.0,
                rows=row.rows,
                shared_blocks_hit=row.shared_blks_hit,
                shared_blocks_read=row.shared_blks_read,
            ),
        )
        for row in rows
    ]
    info = connection.execute(STATEMENTS_INFO).one()
    stats_reset = None if info.stats_reset is None else float(info.stats_reset)
    return StatementsRead(Snapshot(entries, stats_reset), int(info.dealloc))
