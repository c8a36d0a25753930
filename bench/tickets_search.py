"""Support desk search at 100k tickets / 1M messages on SQLite and PostgreSQL in one run, and what a ticket
creation costs on each.

The corpus is generated once (progress bar) into a SQLite file (`--sqlite`, default
.run/bench/tickets-search.sqlite3) and reused on later runs (`--rebuild` regenerates it). `--postgres URL`
names a PostgreSQL database: the desk's migrations run there, and when its tickets differ from the corpus'
the rows are COPYed in and the search index rebuilt (then VACUUM ANALYZE), so later runs reuse it too.

Queries go through `tickets_app.listing.list_tickets`, exactly as the API runs them (agent view, page size
25, the page and its total), in one session per backend on the desk's own engine (service_kit.db.make_engine),
as in the desk's long-lived connections; each case is timed warm, the rare words drawn at random. The cases run in
the order that once set PostgreSQL's generic-plan trap (rare terms first, common terms after). The peer in
the same run is `LIKE '%term%'` over subjects and messages on SQLite, the usual pre-FTS implementation.

Creation: `--creations` tickets made one after another by `Desk.create_ticket` and committed each (inserts,
an event, the SLA recompute, the search index row), on each backend; then deleted again, so the corpus
stays as it was. It shows what the search indexes cost a write.

Run: .venv/bin/python bench/tickets_search.py [--postgres postgresql+psycopg://user@host:port/db]
     [--sqlite PATH] [--tickets 100000] [--messages-per-ticket 10] [--rebuild] [--repeat 40]
     [--case TEXT] [--creations 200] [--phases]
`--case phrase` runs only the cases whose name contains the text; `--creations 0` skips the creations;
`--phases` only times the phases of the rare-word searches (the index's statements, the candidates' lookup,
the snippets, the rollback), `--repeat` times each. Every cell carries the 1-minute load average before and
after its case. On PostgreSQL a peer times a rare word's page of snippets made from windows against
ts_headline over the whole texts, alternating in one loop.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or as bench.tickets_search

import psycopg
from sqlalchemy import Engine, Select, delete, func, select, text
from sqlalchemy.orm import Session
from tqdm import tqdm

from service_kit.db import make_engine
from tickets_app import listing
from tickets_app.cli import migrate
from tickets_app.desk import Actor, Desk
from tickets_app.listing import SlaWindow, list_tickets
from tickets_app.models import Message, Ticket, TicketEvent
from tickets_app.schemas import TicketInput, TicketQuery
from tickets_app.search import PostgresFtsIndex, SqliteFtsIndex, index_for_dialect

DATABASE = Path(".run/bench/tickets-search.sqlite3")
COMMON_WORD = "request"  # in most messages
# Distinct stems (no shared suffixes for the porter stemmer to fold together), each in 20 messages.
_letters = random.Random(3)
RARE_WORDS = ["qx" + "".join(_letters.choices("bcdfgjkvwz", k=6)) for _ in range(40)]
# Two words of the vocabulary's head (ranks 4 and 5 of the Zipf weights), each in nearly every ticket, side by
# side in a few thousand: a word index finds every ticket as a candidate, only positions tell the phrase.
PHRASE_RANKS = (4, 5)
STATUSES = ["open", "in_progress", "waiting", "resolved", "closed"]
PRIORITIES = ["urgent", "high", "medium", "low"]
AGENT = Actor(id="bench-agent", role="agent", name="Bench")
CUSTOMER = Actor(id="bench-customer", role="customer", name="Bench Customer", email="b@example.com", tier="startup")
CORPUS_TABLES = ("tickets", "messages")  # what the generator writes; the rest is the migrations' own


def vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ra", "su", "to", "vi", "ze", "pa", "qu", "ba", "do", "fe", "gi"]
    words = {"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(size * 2)}
    return sorted(words)[:size]


def mid_frequency_phrase() -> str:
    """The phrase case's words: the generator's vocabulary is the first thing it draws from its seed."""
    words = vocabulary(random.Random(42))
    return " ".join(words[rank] for rank in PHRASE_RANKS)


def generate(path: Path, tickets: int, per_ticket: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    migrate(url)
    rng = random.Random(42)
    words = vocabulary(rng)
    # Zipf-like: a few words very common. Cumulative weights once, or choices() redoes them per call.
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(words))))
    rare_targets = {word: set(rng.sample(range(tickets * per_ticket), 20)) for word in RARE_WORDS}
    rare_at: dict[int, list[str]] = {}
    for word, positions in rare_targets.items():
        for position in positions:
            rare_at.setdefault(position, []).append(word)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    message_id = 0
    with tqdm(total=tickets * per_ticket, unit="msg", desc="generating") as progress:
        for first in range(1, tickets + 1, 5000):
            ticket_rows, message_rows = [], []
            for ticket_id in range(first, min(first + 5000, tickets + 1)):
                created = start + timedelta(minutes=ticket_id * 3)
                subject = " ".join(rng.choices(words, cum_weights=cumulative, k=6))
                ticket_rows.append(
                    (
                        ticket_id,
                        subject,
                        rng.choice(STATUSES),
                        rng.choice(PRIORITIES),
                        f"cust-{ticket_id % 5000}",
                        "Customer",
                        "c@example.com",
                        rng.choice(["free", "startup", "professional", "enterprise"]),  # DeskTier: the API serves them
                        _naive(created),
                        _naive(created + timedelta(hours=rng.randint(0, 300))),
                    )
                )
                for _ in range(per_ticket):
                    text = rng.choices(words, cum_weights=cumulative, k=rng.randint(10, 30))
                    if rng.random() < 0.7:
                        text.insert(rng.randrange(len(text)), COMMON_WORD)
                    text += rare_at.get(message_id, [])
                    message_id += 1
                    message_rows.append(
                        (
                            message_id,
                            ticket_id,
                            "customer" if message_id % 2 else "staff",
                            "x",
                            "",
                            " ".join(text),
                            message_id % 7 == 0,
                            _naive(created),
                        )
                    )
            connection.executemany(
                "INSERT INTO tickets (id, subject, status, priority, customer_id, customer_name, customer_email, "
                "customer_tier, created_at, updated_at, sla_breached) VALUES (?,?,?,?,?,?,?,?,?,?,0)",
                ticket_rows,
            )
            connection.executemany(
                "INSERT INTO messages (id, ticket_id, author_kind, author_id, author_name, body, internal, "
                "created_at) VALUES (?,?,?,?,?,?,?,?)",
                message_rows,
            )
            connection.commit()
            progress.update(len(message_rows))
    connection.close()
    engine = make_engine(url)
    began = time.perf_counter()
    with engine.begin() as conn:
        SqliteFtsIndex().rebuild_all(conn)
    engine.dispose()
    print(f"FTS index built in {time.perf_counter() - began:.1f}s")


def _naive(value: datetime) -> str:
    return value.replace(tzinfo=None).isoformat(sep=" ")


def corpus_counts(connection: sqlite3.Connection | psycopg.Connection) -> tuple[int, ...]:
    return tuple(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in CORPUS_TABLES)  # type: ignore[index]


def load_postgres(source: Path, url: str) -> None:
    """Migrate the database at `url` and, unless it holds the corpus already, COPY it in from the SQLite
    file and rebuild the search index."""
    migrate(url)
    engine = make_engine(url)
    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with sqlite3.connect(source) as lite, psycopg.connect(dsn) as desk:
        expected = corpus_counts(lite)
        if corpus_counts(desk) == expected:
            engine.dispose()
            return
        began = time.perf_counter()
        desk.execute(f"TRUNCATE {', '.join(CORPUS_TABLES)} CASCADE")
        for table in CORPUS_TABLES:
            columns = ", ".join(row[1] for row in lite.execute(f"PRAGMA table_info({table})"))
            with desk.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in lite.execute(f"SELECT {columns} FROM {table}"):
                    copy.write_row(row)
            desk.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}")
        desk.commit()
        if corpus_counts(desk) != expected:
            raise SystemExit(f"COPY loaded {corpus_counts(desk)} rows of {CORPUS_TABLES}, the corpus has {expected}")
        print(f"PostgreSQL: corpus COPYed in {time.perf_counter() - began:.1f}s")
    began = time.perf_counter()
    with engine.begin() as connection:
        index_for_dialect("postgresql").rebuild_all(connection)
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    print(f"PostgreSQL: search index rebuilt, VACUUM ANALYZE in {time.perf_counter() - began:.1f}s")
    engine.dispose()


def timed(run: Callable[[], tuple[int, int]], repeat: int) -> tuple[list[float], tuple[int, int], str]:
    """The samples (ms), what the last run found, and the 1-minute load average before and after: on a
    shared host a p95 means little without the load it was measured at."""
    run()  # warm
    samples, found = [], (0, 0)
    load_before = os.getloadavg()[0]
    for _ in range(repeat):
        began = time.perf_counter()
        found = run()
        samples.append((time.perf_counter() - began) * 1000)
    return samples, found, f"load {load_before:.1f}-{os.getloadavg()[0]:.1f}"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def search_cases(session: Session, repeat: int, only: str = "") -> list[tuple[str, Callable[[], tuple[int, int]], int]]:
    """(case, one call returning (tickets on the page, the list's total), runs) of each search case whose
    name contains `only`."""
    backend = session.get_bind().dialect.name
    index = index_for_dialect(backend)
    rng = random.Random(7)
    phrase = mid_frequency_phrase()

    def searched(query: str) -> Callable[[], tuple[int, int]]:
        def run() -> tuple[int, int]:
            search = TicketQuery(q=query.format(word=rng.choice(RARE_WORDS)))
            window = SlaWindow(datetime.now(UTC), timedelta(hours=1))
            page = list_tickets(session, index, AGENT, search, window)
            session.rollback()  # as a request ends; the next one starts a new transaction
            return len(page.tickets), page.total

        return run

    def by_id_in(query: str) -> Callable[[], tuple[int, int]]:
        """The search with its candidates filtered by `id IN (…)` beside the filters, as before they were
        looked up by id on SQLite (tickets_app.listing._held_of)."""
        search = searched(query)

        def plain(session: Session, filtered: Select[Any], ids: list[int], whole: bool = True) -> Select[Any]:
            return (filtered if whole else filtered.with_only_columns(Ticket.id)).where(Ticket.id.in_(ids))

        def run() -> tuple[int, int]:
            held_of = listing._held_of
            listing._held_of = plain
            try:
                return search()
            finally:
                listing._held_of = held_of

        return run

    def like(word_source: Callable[[], str]) -> Callable[[], tuple[int, int]]:
        def run() -> tuple[int, int]:
            pattern = f"%{word_source()}%"
            matching = select(Message.ticket_id).where(Message.body.like(pattern))
            query = (
                select(Ticket.id)
                .where(Ticket.subject.like(pattern) | Ticket.id.in_(matching))
                .order_by(Ticket.updated_at.desc())
                .limit(25)
            )
            return len(session.scalars(query).all()), -1

        return run

    cases = [
        ("rare term, ranked", searched("{word}"), repeat),
        ("rare term + status:open", searched("{word} status:open"), repeat),
        ("rare term + status:open priority:high", searched("{word} status:open priority:high"), repeat),
        (f'mid-frequency phrase "{phrase}"', searched(f'"{phrase}"'), repeat // 2),
        ("common term, ranked", searched(COMMON_WORD), repeat // 2),
        ("common term, sort:-updated", searched(COMMON_WORD + " sort:-updated"), repeat // 2),
        ("common term + status:open, ranked", searched(COMMON_WORD + " status:open"), repeat // 2),
    ]
    if backend == "sqlite":
        cases.append(("rare term, LIKE scan (peer)", like(lambda: rng.choice(RARE_WORDS)), 5))
        cases.append(
            ("rare term + status:open, candidates filtered by id IN (peer)", by_id_in("{word} status:open"), repeat)
        )
    return [case for case in cases if only in case[0]]


def whole_text_headlines(session: Session, word: str, ticket_ids: list[int]) -> dict[int, str]:
    """The peer of a one-word search's snippets on PostgreSQL: ts_headline over each ticket's whole shown
    text, as the desk made them before windows (tickets_app.headline_window)."""
    index = PostgresFtsIndex()
    statement = text(
        f"SELECT ticket_id, ts_headline('{index.config}', concat_ws(E'\\n', subject, public_body, internal_body), "
        f"phraseto_tsquery('{index.config}', :word), :options) FROM {index.table} WHERE ticket_id = ANY(:ids)"
    )
    return dict(session.execute(statement, {"word": word, "options": index.headline_options, "ids": ticket_ids}).all())


def headline_peer(session: Session, repeat: int) -> str:
    """A rare word's page of snippets (agent), windows against the whole text, alternating in one loop:
    p50 / p95 of each, the ratio of the medians, and whether every snippet was the same."""
    index = PostgresFtsIndex()
    rng = random.Random(5)
    windows: list[float] = []
    whole: list[float] = []
    same = True
    load_before = os.getloadavg()[0]
    for round_number in range(repeat):
        word = rng.choice(RARE_WORDS)
        ids = [ticket_id for ticket_id, _ in sorted(index.ranked(session, [word], True), key=lambda r: r[1])][:25]
        results: list[dict[int, str]] = [{}, {}]
        for number in (0, 1) if round_number % 2 else (1, 0):
            began = time.perf_counter()
            results[number] = (
                index.snippets(session, [word], True, ids) if number == 0 else whole_text_headlines(session, word, ids)
            )
            (windows if number == 0 else whole).append((time.perf_counter() - began) * 1000)
        same = same and results[0] == results[1]
        session.rollback()
    ratio = statistics.median(whole) / statistics.median(windows)
    return (
        f"{statistics.median(windows):.1f} / {percentile(windows, 0.95):.1f} against "
        f"{statistics.median(whole):.1f} / {percentile(whole, 0.95):.1f}, {ratio:.1f}x ({repeat} pages, "
        f"{'the same snippets' if same else 'SNIPPETS DIFFER'}, load {load_before:.1f}-{os.getloadavg()[0]:.1f})"
    )


PHASES = {  # where a search's time goes: the functions timed, by the module that holds them
    "index": ("ranked", "snippets"),
    "listing": ("_every_candidate", "_filtered_candidates", "_older_rows", "_count"),
}


def phases(session: Session, query: str, repeat: int) -> str:
    """p50 / p95 ms of each phase of `repeat` searches of `query` (`{word}`: a rare word), of the whole
    list_tickets call and of the rollback that ends it: each phase's functions wrapped with a timer."""
    backend = session.get_bind().dialect.name
    index = index_for_dialect(backend)
    spent: dict[str, float] = {}

    def timer(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed_function(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + (time.perf_counter() - began) * 1000

        return timed_function

    originals = {name: getattr(listing, name) for name in PHASES["listing"]}
    for name in PHASES["index"]:
        setattr(index, name, timer(name, getattr(index, name)))
    for name, function in originals.items():
        setattr(listing, name, timer(name, function))
    rng = random.Random(9)
    samples: dict[str, list[float]] = {}
    load_before = os.getloadavg()[0]
    try:
        for number in range(repeat + 1):  # the first one warms
            spent.clear()
            search = TicketQuery(q=query.format(word=rng.choice(RARE_WORDS)))
            timer("list_tickets", list_tickets)(
                session, index, AGENT, search, SlaWindow(datetime.now(UTC), timedelta(hours=1))
            )
            timer("rollback", session.rollback)()
            for name, ms in spent.items():
                if number:
                    samples.setdefault(name, []).append(ms)
    finally:
        for name, function in originals.items():
            setattr(listing, name, function)
    cells = ", ".join(f"{name} {statistics.median(v):.2f} / {percentile(v, 0.95):.2f}" for name, v in samples.items())
    return f"{backend} `{query}`: {cells} ({repeat} runs, load {load_before:.1f}-{os.getloadavg()[0]:.1f})"


def creation_rate(engine: Engine, creations: int) -> float:
    """Tickets per second made by the Desk and committed one by one; the new tickets are deleted after."""
    desk = Desk(index_for_dialect(engine.dialect.name))
    rng = random.Random(11)
    with Session(engine) as session:
        first_new = (session.scalar(select(func.max(Ticket.id))) or 0) + 1
        began = time.perf_counter()
        for number in range(creations):
            words = " ".join(rng.choices([*RARE_WORDS, COMMON_WORD, "invoice", "export", "login"], k=20))
            body = TicketInput(subject=f"Bench ticket {number}", body=words, priority="high")
            desk.create_ticket(session, CUSTOMER, body, datetime.now(UTC))
            session.commit()
        rate = creations / (time.perf_counter() - began)
        new = Ticket.id >= first_new
        session.execute(delete(Message).where(Message.ticket_id.in_(select(Ticket.id).where(new))))
        session.execute(delete(TicketEvent).where(TicketEvent.ticket_id.in_(select(Ticket.id).where(new))))
        if engine.dialect.name == "sqlite":
            session.execute(text(f"DELETE FROM {SqliteFtsIndex.table} WHERE rowid >= :first"), {"first": first_new})
        session.execute(delete(Ticket).where(new))
        session.commit()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sqlite", type=Path, default=DATABASE, help="the corpus' SQLite file")
    parser.add_argument("--postgres", help="a PostgreSQL database URL (postgresql+psycopg://…) to load and search")
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--messages-per-ticket", type=int, default=10)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--creations", type=int, default=200, help="0: no creations")
    parser.add_argument("--case", default="", help="only the cases whose name contains this text")
    parser.add_argument("--phases", action="store_true", help="only where the rare-word searches spend their time")
    args = parser.parse_args()
    if args.rebuild or not args.sqlite.exists():
        generate(args.sqlite, args.tickets, args.messages_per_ticket)
    urls = [f"sqlite:///{args.sqlite}"]
    if args.postgres:
        load_postgres(args.sqlite, args.postgres)
        urls.append(args.postgres)
    engines = [make_engine(url) for url in urls]
    backends = [engine.dialect.name for engine in engines]
    sessions = [Session(engine) for engine in engines]
    for backend, session in zip(backends, sessions, strict=True):
        counts = [session.scalar(select(func.count()).select_from(t)) for t in (Ticket, Message)]
        print(f"{backend}: {counts[0]} tickets, {counts[1]} messages")
    print(f"load average before: {load_average()}")
    if args.phases:
        for session in sessions:
            for query in ("{word}", "{word} status:open"):
                print(phases(session, query, args.repeat))
        return
    # Case by case, each backend in turn: a change in the machine's load reaches both alike.
    table: dict[str, dict[str, str]] = {}
    for cases in zip(*(search_cases(session, args.repeat, args.case) for session in sessions), strict=False):
        for backend, (name, run, runs) in zip(backends, cases, strict=False):
            samples, (shown, total), load = timed(run, runs)
            cell = f"{statistics.median(samples):.1f} / {percentile(samples, 0.95):.1f} ({runs} runs"
            cell += f", {shown} shown of {total}, {load})" if total >= 0 else f", {shown} shown, {load})"
            table.setdefault(name, {})[backend] = cell
    for name, run, runs in search_cases(sessions[0], args.repeat, args.case)[len(table) :]:  # SQLite's peer
        samples, (shown, total), load = timed(run, runs)
        found = f", {shown} shown of {total}" if total >= 0 else ""
        cell = f"{statistics.median(samples):.1f} / {percentile(samples, 0.95):.1f} ({runs} runs{found}, {load})"
        table[name] = {"sqlite": cell}
    if "postgresql" in backends and args.case in "rare term snippets":
        peer = headline_peer(sessions[backends.index("postgresql")], args.repeat)
        table["rare term's page of snippets: windows against whole texts (peer)"] = {"postgresql": peer}
    for session in sessions:
        session.close()
    rates = {
        b: creation_rate(engine, args.creations) for b, engine in zip(backends, engines, strict=True) if args.creations
    }
    print(f"load average after: {load_average()}")
    print("\n| query (p50 / p95 ms) | " + " | ".join(backends) + " |")
    print("|---|" + "---|" * len(backends))
    for name, cells in table.items():
        print(f"| {name} | " + " | ".join(cells.get(b, "-") for b in backends) + " |")
    if rates:
        created = " | ".join(f"{rates[b]:.0f}" for b in backends)
        print(f"| ticket creations per second, committed one by one ({args.creations}) | {created} |")


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
