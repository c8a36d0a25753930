"""Index suggestions the planner has confirmed, with hypopg's hypothetical indexes.

Steps, each cheaper than the next, so the planner only sees candidates worth checking:
1. tables with the most rows read by sequential scans (``pg_stat_user_tables``, at least ``min_rows`` live);
2. the SELECTs with the most execution time in this database (``pg_stat_statements``);
3. each query's generic plan (``plan_cache_mode = force_generic_plan``, so the ``$1`` parameters need no
   values): the sequential scans on those tables and the columns their filters name;
4. for each such column, ``hypopg_create_index('CREATE INDEX ON t (c)')`` and the plan again: the
   suggestion stands only if the plan now uses that index and its cost fell by ``min_cost_reduction``.

The query texts are PostgreSQL's own record of what its clients ran. They are planned, never run: only
SELECTs, ``PREPARE`` (psycopg's extended protocol takes one statement, no ``;`` chains), ``EXPLAIN`` without
ANALYZE, in a read-only transaction with a statement timeout, rolled back. Hypothetical indexes live in
the exporter's session only and are dropped (``hypopg_reset``) after every query.

Without hypopg (the official postgres image lacks it) :func:`suggest` is never called: the exporter reports
``pg_insights_extension_available{extension="hypopg"} 0`` and serves no suggestions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection

from exporters.queries.settings import SuggestionsSettings
from service_kit import sqltext

PROBE = "vibelux_insights_probe"

SEQUENTIAL_TABLES = text(
    """
    SELECT schemaname, relname FROM pg_stat_user_tables
    WHERE seq_scan > 0 AND n_live_tup >= :min_rows
    ORDER BY seq_tup_read DESC LIMIT :tables
    """
)
TOP_QUERIES = text(
    """
    SELECT query, calls, total_exec_time FROM pg_stat_statements
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND queryid IS NOT NULL AND toplevel
    ORDER BY total_exec_time DESC LIMIT :queries
    """
)
PREPARED = text("SELECT 1 FROM pg_prepared_statements WHERE name = :name")
TABLE_COLUMNS = text(
    """
    SELECT a.attname FROM pg_attribute AS a
    JOIN pg_class AS c ON c.oid = a.attrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relname = :table AND a.attnum > 0 AND NOT a.attisdropped
    """
)


@dataclass(frozen=True)
class Suggestion:
    """CREATE INDEX ON ``table`` (``column``): the plan of query ``fingerprint`` cost ``cost_before``, and
    ``cost_after`` with the index; ``exec_seconds`` is that query's total time (its weight)."""

    table: str  # schema.table
    column: str
    fingerprint: str
    cost_before: float
    cost_after: float
    exec_seconds: float

    @property
    def cost_reduction(self) -> float:
        return 1 - self.cost_after / self.cost_before if self.cost_before > 0 else 0.0


def plan_nodes(plan: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan, depth first."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


def sequential_scans(plan: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(schema, table, filter) of each filtered sequential scan in the plan."""
    return [
        (node.get("Schema", "public"), node["Relation Name"], node["Filter"])
        for node in plan_nodes(plan)
        if node.get("Node Type") == "Seq Scan" and "Filter" in node and "Relation Name" in node
    ]


def uses_index(plan: Mapping[str, Any], index_name: str) -> bool:
    return any(node.get("Index Name") == index_name for node in plan_nodes(plan))


def candidate_columns(filter_text: str, columns: Iterable[str]) -> list[str]:
    """The table's columns that the scan's filter names, in a stable order."""
    named = sqltext.identifiers(filter_text)
    return sorted(column for column in columns if column.lower() in named)


def parameter_count(query: str) -> int:
    """The highest ``$n`` in PostgreSQL's normalised text (how many NULLs ``EXECUTE`` must pass)."""
    highest, i, n = 0, 0, len(query)
    while i < n:
        if query[i] == "$" and i + 1 < n and query[i + 1].isdigit():
            j = i + 1
            while j < n and query[j].isdigit():
                j += 1
            highest = max(highest, int(query[i + 1 : j]))
            i = j
        else:
            i += 1
    return highest


def best_suggestions(found: Iterable[Suggestion], limit: int) -> list[Suggestion]:
    """One suggestion per (table, column), the one saving most; then the ``limit`` saving most time."""
    best: dict[tuple[str, str], Suggestion] = {}
    for suggestion in found:
        key = (suggestion.table, suggestion.column)
        if key not in best or _saving(suggestion) > _saving(best[key]):
            best[key] = suggestion
    return sorted(best.values(), key=lambda s: (-_saving(s), s.table, s.column))[:limit]


def _saving(suggestion: Suggestion) -> float:
    return suggestion.exec_seconds * suggestion.cost_reduction


def suggest(connection: Connection, settings: SuggestionsSettings) -> list[Suggestion]:
    """Planner-confirmed suggestions for the connected database (hypopg must be installed in it)."""
    found: list[Suggestion] = []
    transaction = connection.begin()
    try:
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        milliseconds = max(1, int(settings.statement_timeout_seconds * 1000))
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")
        connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        limits = {"min_rows": settings.min_rows, "tables": settings.tables}
        tables = {(row.schemaname, row.relname) for row in connection.execute(SEQUENTIAL_TABLES, limits)}
        if tables:
            for row in connection.execute(TOP_QUERIES, {"queries": settings.queries}).all():
                if sqltext.statement_type(row.query) == "select":
                    found.extend(_check_query(connection, row.query, row.total_exec_time / 1000.0, tables))
    finally:
        transaction.rollback()
    return [s for s in found if s.cost_reduction >= settings.min_cost_reduction]


def _check_query(
    connection: Connection, query: str, exec_seconds: float, tables: set[tuple[str, str]]
) -> list[Suggestion]:
    """Hypothetical indexes on the filtered columns of the query's sequential scans over ``tables``."""
    raw = connection.connection.driver_connection
    suggestions = []
    savepoint = connection.begin_nested()
    try:
        before = _generic_plan(connection, query)
        for schema, table, filter_text in sequential_scans(before):
            if (schema, table) not in tables:
                continue
            columns = [r.attname for r in connection.execute(TABLE_COLUMNS, {"schema": schema, "table": table})]
            for column in candidate_columns(filter_text, columns):
                ddl = sql.SQL("CREATE INDEX ON {}.{} ({})").format(
                    sql.Identifier(schema), sql.Identifier(table), sql.Identifier(column)
                )
                index_name = connection.execute(
                    text("SELECT indexname FROM hypopg_create_index(:ddl)"), {"ddl": ddl.as_string(raw)}
                ).scalar_one()
                after = _generic_plan(connection, query)
                connection.execute(text("SELECT hypopg_reset()"))
                if uses_index(after, index_name):
                    cost_before, cost_after = float(before["Total Cost"]), float(after["Total Cost"])
                    fingerprint = sqltext.fingerprint(query)
                    suggestions.append(
                        Suggestion(f"{schema}.{table}", column, fingerprint, cost_before, cost_after, exec_seconds)
                    )
        savepoint.commit()
    except Exception:  # a statement that no longer plans (a dropped table, a timeout): skip it
        savepoint.rollback()
        suggestions = []
    # a prepared statement outlives the transaction's rollback: drop it, whatever happened
    if connection.execute(PREPARED, {"name": PROBE}).first() is not None:
        connection.exec_driver_sql(f"DEALLOCATE {PROBE}")
    connection.execute(text("SELECT hypopg_reset()"))
    return suggestions


def _generic_plan(connection: Connection, query: str) -> Mapping[str, Any]:
    """The plan PostgreSQL would cache for the query with its parameters unknown. Prepared anew each time:
    a prepared statement keeps its plan, and a hypothetical index does not invalidate it."""
    nulls = ", ".join(["NULL"] * parameter_count(query))
    connection.exec_driver_sql(f"PREPARE {PROBE} AS {query}")
    document = connection.exec_driver_sql(
        f"EXPLAIN (FORMAT JSON) EXECUTE {PROBE}" + (f"({nulls})" if nulls else "")
    ).scalar_one()
    connection.exec_driver_sql(f"DEALLOCATE {PROBE}")
    plan: Mapping[str, Any] = document[0]["Plan"]
    return plan
