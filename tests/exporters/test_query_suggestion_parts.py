"""The pure parts of index suggestions: reading plans, choosing columns, counting parameters, ranking."""

from __future__ import annotations

from exporters.queries.suggestions import (
    Suggestion,
    best_suggestions,
    candidate_columns,
    parameter_count,
    sequential_scans,
    uses_index,
)

PLAN = {
    "Node Type": "Hash Join",
    "Plans": [
        {"Node Type": "Seq Scan", "Relation Name": "orders", "Filter": "((status)::text = $2)"},
        {"Node Type": "Seq Scan", "Relation Name": "small", "Schema": "app"},  # no filter: read whole anyway
        {
            "Node Type": "Hash",
            "Plans": [{"Node Type": "Index Scan", "Relation Name": "users", "Index Name": "<13543>btree_users_id"}],
        },
    ],
}


def test_sequential_scans_are_the_filtered_ones_anywhere_in_the_plan() -> None:
    assert sequential_scans(PLAN) == [("public", "orders", "((status)::text = $2)")]


def test_an_index_counts_as_used_only_by_its_own_name() -> None:
    assert uses_index(PLAN, "<13543>btree_users_id")
    assert not uses_index(PLAN, "<13544>btree_orders_status")


def test_candidate_columns_are_the_table_columns_the_filter_names() -> None:
    columns = ["id", "status", "customer_id", "Note"]
    assert candidate_columns("((customer_id = $1) AND ((status)::text = 'text'::text))", columns) == [
        "customer_id",
        "status",
    ]
    assert candidate_columns("(note IS NOT NULL)", columns) == ["Note"]


def test_parameter_count_is_the_highest_placeholder() -> None:
    assert parameter_count("SELECT * FROM t WHERE a = $1 AND b = $12 OR c = $3") == 12
    assert parameter_count("SELECT 1") == 0
    assert parameter_count("SELECT '$' || x FROM t WHERE y = $2") == 2


def suggestion(table: str, column: str, after: float, seconds: float, fingerprint: str = "f") -> Suggestion:
    return Suggestion(table, column, fingerprint, cost_before=100.0, cost_after=after, exec_seconds=seconds)


def test_best_suggestions_keep_one_per_column_and_rank_by_time_saved() -> None:
    found = [
        suggestion("public.orders", "customer_id", after=10, seconds=5, fingerprint="a"),  # saves 4.5
        suggestion("public.orders", "customer_id", after=1, seconds=8, fingerprint="b"),  # saves 7.92: kept
        suggestion("public.users", "email", after=50, seconds=30),  # saves 15
        suggestion("public.tags", "name", after=90, seconds=1),  # saves 0.1
    ]
    best = best_suggestions(found, limit=2)
    assert [(s.table, s.column, s.fingerprint) for s in best] == [
        ("public.users", "email", "f"),
        ("public.orders", "customer_id", "b"),
    ]
    assert best[1].cost_reduction == 0.99
