"""The query exporter's pure core: pg_stat_statements snapshots in, at most K+1 monotonic series out.

No I/O and no clock. Each read of ``pg_stat_statements`` is a :class:`Snapshot`;
:class:`TopK` turns consecutive snapshots into deltas and books every delta into exactly one series.

Deltas, per entry (``userid, dbid, queryid, toplevel``):
1. the first snapshot is the baseline: nothing before it is known to be recent, so it books nothing;
2. ``pg_stat_statements_reset()`` changes ``pg_stat_statements_info.stats_reset``: every entry then counts
   from zero, so its whole counters are the delta;
3. an entry absent last time was created since (a new statement, or one evicted when the view held
   ``pg_stat_statements.max`` entries and then seen again): its whole counters are the delta;
4. an entry whose counters went down was reset on its own (``pg_stat_statements_reset(userid, dbid,
   queryid)``) or evicted and re-created between two reads: its whole counters are the delta again;
5. an entry that disappeared books nothing more (what it did between the last read and its eviction is
   lost; ``pg_statements_deallocations_total`` says how often that happens).
No delta is ever negative.

Series: deltas are summed by fingerprint (:func:`service_kit.sqltext.fingerprint` of the normalised text, so
several queryids of one shape, e.g. ``IN`` lists of different lengths, are one series, and the label is the
same on every server). The K fingerprints with the highest total execution time (decayed, so the ranking
follows recent load; a member's score counts ``hysteresis`` more, so two close queries do not swap at every
read) each have a series; every other delta goes to ``fingerprint="other"``. So each metric has at most
K+1 series, however many distinct statements the server sees.

When a query leaves the top K its series ends, and it does not fold its total into "other". Folding is the
textbook way to keep the sum of the raw counters monotonic, but Prometheus never sums raw counters: it
takes ``rate()`` or ``increase()`` per series and sums those. A folded total would arrive in "other" as one
jump, and ``sum(rate(...))`` would count the departed query's whole history a second time
(``test_folding_into_other_would_count_history_twice`` pins that). Here each delta is booked once, in the
series that is a member when it happens; a series that joins starts at 0, and the
delta of the read where it joined goes to "other". Every series is monotonic while it exists, and
``sum(increase(...))`` over all series equals the increase of the server's own totals, provided Prometheus
scrapes at least as often as the exporter reads (15 s against 30 s as shipped): a joiner's first sample is
then its 0, and increase() counts from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

from service_kit import sqltext

EntryKey = tuple[int, int, int, bool]  # userid, dbid, queryid, toplevel
OTHER = sqltext.OTHER


@dataclass(frozen=True)
class Counters:
    """One entry's cumulative counters, as ``pg_stat_statements`` reports them (time in seconds)."""

    calls: int = 0
    exec_seconds: float = 0.0
    rows: int = 0
    shared_blocks_hit: int = 0
    shared_blocks_read: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def covers(self, earlier: Counters) -> bool:
        """Every counter is at least the earlier one's: the same entry, counted on (no reset in between)."""
        return all(getattr(self, f.name) >= getattr(earlier, f.name) for f in fields(self))


ZERO = Counters()


@dataclass(frozen=True)
class Entry:
    key: EntryKey
    query: str  # PostgreSQL's text ($1 for constants, except in utility statements)
    counters: Counters


@dataclass(frozen=True)
class Snapshot:
    """One read of the view; ``stats_reset`` from ``pg_stat_statements_info`` (changes on a full reset)."""

    entries: list[Entry]
    stats_reset: float | None = None


def entry_deltas(previous: Mapping[EntryKey, Counters], current: Iterable[Entry]) -> dict[EntryKey, Counters]:
    """What each current entry did since ``previous`` (rules 3-5 of the module docstring); never negative."""
    deltas: dict[EntryKey, Counters] = {}
    for entry in current:
        before = previous.get(entry.key)
        counted_on = before is not None and entry.counters.covers(before)
        delta = entry.counters - before if counted_on and before is not None else entry.counters
        if delta != ZERO:
            deltas[entry.key] = delta
    return deltas


def select_members(scores: Mapping[str, float], members: Iterable[str], k: int, hysteresis: float) -> list[str]:
    """The K fingerprints with the highest scores (members' scores count ``1 + hysteresis``); none at 0."""
    current = set(members)

    def rank(fingerprint: str) -> tuple[float, str]:
        score = scores.get(fingerprint, 0.0) * (1 + hysteresis if fingerprint in current else 1)
        return (-score, fingerprint)

    ranked = sorted((fp for fp, score in scores.items() if score > 0), key=rank)
    return ranked[:k]


@dataclass
class Series:
    """One exported series: its counters since it began, its labels, and the query text (members)."""

    fingerprint: str
    statement_type: str
    query: str
    totals: Counters = ZERO


@dataclass
class _Shape:
    fingerprint: str
    statement_type: str
    query: str


@dataclass
class TopK:
    """Consecutive snapshots in, :meth:`series` out: the K members and "other"."""

    k: int
    decay: float = 0.9  # score kept from one read to the next (the ranking's memory)
    hysteresis: float = 0.1
    query_chars: int = 200
    other: Series = field(default_factory=lambda: Series(OTHER, OTHER, ""))
    members: dict[str, Series] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    _previous: dict[EntryKey, Counters] | None = None
    _stats_reset: float | None = None
    _shapes: dict[EntryKey, _Shape] = field(default_factory=dict)
    _labels: dict[str, tuple[str, str]] = field(default_factory=dict)  # fingerprint -> (type, text), scored ones

    def observe(self, snapshot: Snapshot) -> None:
        """Book the deltas since the previous snapshot (the first one is only the baseline)."""
        if self._previous is None:
            self._remember(snapshot, self._shapes_of(snapshot.entries))
            return
        previous = {} if snapshot.stats_reset != self._stats_reset else self._previous
        deltas = entry_deltas(previous, snapshot.entries)
        shapes = self._shapes_of(snapshot.entries)
        by_fingerprint: dict[str, Counters] = {}
        for key, delta in deltas.items():
            fingerprint = shapes[key].fingerprint
            by_fingerprint[fingerprint] = by_fingerprint.get(fingerprint, ZERO) + delta
        self._update_scores(by_fingerprint, {shape.fingerprint for shape in shapes.values()})
        chosen = select_members(self.scores, self.members, self.k, self.hysteresis)
        joined = [fp for fp in chosen if fp not in self.members]
        self.members = {fp: self.members[fp] for fp in chosen if fp in self.members}
        for fingerprint, delta in by_fingerprint.items():
            target = self.members.get(fingerprint, self.other)
            target.totals = target.totals + delta
        for shape in shapes.values():
            self._labels.setdefault(shape.fingerprint, (shape.statement_type, shape.query[: self.query_chars]))
        self._labels = {fp: labels for fp, labels in self._labels.items() if fp in self.scores}
        for fingerprint in joined:  # after booking: the read it joined in went to "other"
            kind, text = self._labels.get(fingerprint, (OTHER, ""))
            self.members[fingerprint] = Series(fingerprint, kind, text)
        self._remember(snapshot, shapes)

    def series(self) -> list[Series]:
        """Members by score, then "other": at most K+1."""
        ordered = sorted(self.members.values(), key=lambda s: -self.scores.get(s.fingerprint, 0.0))
        return [*ordered, self.other]

    def _update_scores(self, deltas: Mapping[str, Counters], present: set[str]) -> None:
        """Decay every score, add this read's execution time; forget fingerprints gone from the view and
        decayed to nothing, so memory stays bounded by the view's size."""
        scores: dict[str, float] = {}
        for fingerprint in present | set(self.scores) | set(deltas):
            score = self.scores.get(fingerprint, 0.0) * self.decay
            score += deltas[fingerprint].exec_seconds if fingerprint in deltas else 0.0
            if fingerprint in present or fingerprint in self.members or score > 1e-9:
                scores[fingerprint] = score
        self.scores = scores

    def _shapes_of(self, entries: list[Entry]) -> dict[EntryKey, _Shape]:
        shapes: dict[EntryKey, _Shape] = {}
        for entry in entries:
            shape = self._shapes.get(entry.key)
            if shape is None or shape.query != entry.query:
                # the text shown is normalised again: PostgreSQL keeps utility statements' literals (a
                # password in ALTER ROLE), and no literal may reach a label
                text = sqltext.normalise(entry.query)
                shape = _Shape(sqltext.fingerprint(entry.query), sqltext.statement_type(entry.query), text)
            shapes[entry.key] = shape
        return shapes

    def _remember(self, snapshot: Snapshot, shapes: dict[EntryKey, _Shape]) -> None:
        self._previous = {entry.key: entry.counters for entry in snapshot.entries}
        self._stats_reset = snapshot.stats_reset
        self._shapes = shapes
