"""The query exporter's pure core: deltas through resets and evictions, and at most K+1 series."""

from __future__ import annotations

import pytest

from exporters.queries.topk import OTHER, Counters, Entry, Snapshot, TopK, entry_deltas, select_members
from service_kit import sqltext


def entry(queryid: int, calls: int, seconds: float, query: str | None = None) -> Entry:
    text = query or f"SELECT * FROM t{queryid} WHERE id = $1"
    return Entry((10, 1, queryid, True), text, Counters(calls, seconds, calls, calls * 3, calls))


def by_fingerprint(topk: TopK) -> dict[str, Counters]:
    return {series.fingerprint: series.totals for series in topk.series()}


def fp(queryid: int) -> str:
    return sqltext.fingerprint(f"SELECT * FROM t{queryid} WHERE id = $1")


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(entry(1, 10, 1.0), entry(1, 15, 1.5), Counters(5, 0.5, 5, 15, 5), id="counted-on"),
        pytest.param(None, entry(1, 4, 0.4), Counters(4, 0.4, 4, 12, 4), id="new-entry"),
        pytest.param(entry(1, 10, 1.0), entry(1, 3, 0.3), Counters(3, 0.3, 3, 9, 3), id="reset-or-re-created"),
    ],
)
def test_entry_delta_is_never_negative(before: Entry | None, after: Entry, expected: Counters) -> None:
    previous = {} if before is None else {before.key: before.counters}
    assert entry_deltas(previous, [after]) == {after.key: expected}


def test_an_evicted_entry_books_nothing_and_an_unchanged_one_is_left_out() -> None:
    previous = {entry(1, 10, 1.0).key: entry(1, 10, 1.0).counters, entry(2, 5, 1.0).key: entry(2, 5, 1.0).counters}
    assert entry_deltas(previous, [entry(1, 10, 1.0)]) == {}


def test_first_snapshot_is_the_baseline_and_books_nothing() -> None:
    topk = TopK(k=2)
    topk.observe(Snapshot([entry(1, 100, 10.0)]))
    assert by_fingerprint(topk) == {OTHER: Counters()}


def test_full_reset_counts_every_entry_from_zero() -> None:
    topk = TopK(k=5)
    topk.observe(Snapshot([entry(1, 100, 10.0)], stats_reset=1.0))
    # reset, then more calls than before: without stats_reset this would look like +20
    topk.observe(Snapshot([entry(1, 120, 12.0)], stats_reset=2.0))
    assert sum(c.calls for c in by_fingerprint(topk).values()) == 120


def test_series_stay_at_most_k_plus_one_and_book_every_call_once() -> None:
    topk = TopK(k=10)
    topk.observe(Snapshot([]))
    prometheus = PrometheusView(topk)
    for read in range(1, 8):
        entries = [entry(q, read * (q % 7 + 1), read * (q % 13) * 0.01) for q in range(2000)]
        topk.observe(Snapshot(entries))
        prometheus.scrape(topk)
        assert len(topk.series()) <= 11
    assert prometheus.increase == sum(q % 7 + 1 for q in range(2000)) * 7


def test_the_heaviest_queries_are_the_members() -> None:
    topk = TopK(k=3)
    topk.observe(Snapshot([]))
    for read in range(1, 4):
        heavy = [entry(q, read, read * 5.0) for q in (1, 2, 3)]
        light = [entry(q, read * 100, read * 0.01) for q in range(10, 50)]
        topk.observe(Snapshot(heavy + light))
    assert set(by_fingerprint(topk)) == {fp(1), fp(2), fp(3), OTHER}


def test_a_joining_query_starts_at_zero_and_its_first_read_goes_to_other() -> None:
    topk = TopK(k=1)
    topk.observe(Snapshot([]))
    topk.observe(Snapshot([entry(1, 10, 1.0)]))
    assert by_fingerprint(topk) == {fp(1): Counters(), OTHER: Counters(10, 1.0, 10, 30, 10)}
    topk.observe(Snapshot([entry(1, 15, 1.5)]))
    assert by_fingerprint(topk)[fp(1)] == Counters(5, 0.5, 5, 15, 5)
    assert topk.series()[0].statement_type == "select"


def test_a_leaving_query_ends_its_series_and_later_calls_go_to_other() -> None:
    topk = TopK(k=1, decay=0.0)  # no memory: the last read alone ranks
    topk.observe(Snapshot([]))
    topk.observe(Snapshot([entry(1, 10, 5.0)]))
    topk.observe(Snapshot([entry(1, 20, 10.0), entry(2, 1, 0.1)]))
    other_before = by_fingerprint(topk)[OTHER]
    topk.observe(Snapshot([entry(1, 21, 10.1), entry(2, 11, 20.1)]))
    series = by_fingerprint(topk)
    assert fp(1) not in series and series[fp(2)] == Counters()
    # the leaver's history is not folded in: only this read's deltas (1 + 10 calls) arrived in other
    assert series[OTHER].calls - other_before.calls == 11


def test_folding_into_other_would_count_history_twice() -> None:
    """The rejected design: fold a leaver's total into other. Prometheus' increase() of other would then
    include the leaver's whole history, which the leaver's own series had already reported."""
    topk = TopK(k=1, decay=0.0)
    topk.observe(Snapshot([]))
    prometheus = PrometheusView(topk)
    reads = [[entry(1, 100, 50.0)], [entry(1, 200, 100.0)], [entry(1, 201, 100.1), entry(2, 10, 200.0)]]
    for entries in reads:
        departing = by_fingerprint(topk).get(fp(1), Counters()).calls
        topk.observe(Snapshot(entries))
        prometheus.scrape(topk)
    assert fp(1) not in by_fingerprint(topk)
    assert prometheus.increase == 211  # every call once
    assert prometheus.increase + departing == 311  # folding: other would also jump by the leaver's 100


def test_ranking_prefers_members_by_the_hysteresis() -> None:
    assert select_members({"a": 1.0, "b": 1.05}, ["a"], 1, 0.1) == ["a"]
    assert select_members({"a": 1.0, "b": 1.2}, ["a"], 1, 0.1) == ["b"]
    assert select_members({"a": 0.0}, [], 1, 0.1) == []


class PrometheusView:
    """What Prometheus' increase() sees across scrapes: per series, new series from their first sample."""

    def __init__(self, topk: TopK) -> None:
        self.last: dict[str, int] = {}
        self.increase = 0
        self.scrape(topk)

    def scrape(self, topk: TopK) -> None:
        now = {series.fingerprint: series.totals.calls for series in topk.series()}
        for name, value in now.items():
            if name in self.last:
                assert value >= self.last[name], f"{name} went down"
                self.increase += value - self.last[name]
        self.last = now


def test_the_exported_text_keeps_no_literal_even_where_postgresql_does() -> None:
    """pg_stat_statements keeps utility statements' literals as they were typed (a password in ALTER ROLE)."""
    topk = TopK(k=1)
    topk.observe(Snapshot([]))
    statement = "ALTER ROLE app PASSWORD 'hunter2-secret'"
    topk.observe(Snapshot([entry(1, 1, 9.0, query=statement)]))
    (member, _other) = topk.series()
    assert member.query == "alter role app password ?" and member.statement_type == "other"
