"""Support desk search: FTS5 through the real list/search path vs a LIKE scan, on 100k tickets / 1M messages.

Generates the corpus once (progress bar) into .run/bench/tickets-search.sqlite3, reusing it on later runs
(--rebuild to regenerate). Queries go through `tickets_app.listing.list_tickets`, exactly as the API runs
them (page size 25), and are timed warm. The peer in the same run is `LIKE '%term%'` over subjects and
messages, the usual pre-FTS implementation.

Run: .venv/bin/python bench/tickets_search.py [--tickets 100000] [--messages-per-ticket 10] [--rebuild]
"""

from __future__ import annotations

import argparse
import itertools
import random
import sqlite3
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from tqdm import tqdm

from tickets_app.cli import migrate
from tickets_app.desk import Actor
from tickets_app.listing import SlaWindow, list_tickets
from tickets_app.models import Message, Ticket
from tickets_app.schemas import TicketQuery
from tickets_app.search import SqliteFtsIndex

DATABASE = Path(".run/bench/tickets-search.sqlite3")
COMMON_WORD = "request"  # in most messages
# Distinct stems (no shared suffixes for the porter stemmer to fold together), each in 20 messages.
_letters = random.Random(3)
RARE_WORDS = ["qx" + "".join(_letters.choices("bcdfgjkvwz", k=6)) for _ in range(40)]
STATUSES = ["open", "in_progress", "waiting", "resolved", "closed"]
PRIORITIES = ["urgent", "high", "medium", "low"]
AGENT = Actor(id="bench-agent", role="agent", name="Bench")


def vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ra", "su", "to", "vi", "ze", "pa", "qu", "ba", "do", "fe", "gi"]
    words = {"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(size * 2)}
    return sorted(words)[:size]


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
    engine = create_engine(url)
    began = time.perf_counter()
    with engine.begin() as conn:
        SqliteFtsIndex().rebuild_all(conn)
    print(f"FTS index built in {time.perf_counter() - began:.1f}s")


def _naive(value: datetime) -> str:
    return value.replace(tzinfo=None).isoformat(sep=" ")


def timed(run: Callable[[], int], repeat: int) -> tuple[list[float], int]:
    run()  # warm
    samples, hits = [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        hits = run()
        samples.append((time.perf_counter() - began) * 1000)
    return samples, hits


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--messages-per-ticket", type=int, default=10)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    if args.rebuild or not DATABASE.exists():
        generate(DATABASE, args.tickets, args.messages_per_ticket)
    engine = create_engine(f"sqlite:///{DATABASE}")
    index = SqliteFtsIndex()
    rng = random.Random(7)
    with Session(engine) as session:
        counts = (session.query(Ticket).count(), session.query(Message).count())

        def fts(query: str) -> Callable[[], int]:
            def run() -> int:
                search = TicketQuery(q=query.format(word=rng.choice(RARE_WORDS)))
                window = SlaWindow(datetime.now(UTC), timedelta(hours=1))
                return len(list_tickets(session, index, AGENT, search, window).tickets)

            return run

        def like(word_source: Callable[[], str]) -> Callable[[], int]:
            def run() -> int:
                pattern = f"%{word_source()}%"
                matching = select(Message.ticket_id).where(Message.body.like(pattern))
                query = (
                    select(Ticket.id)
                    .where(Ticket.subject.like(pattern) | Ticket.id.in_(matching))
                    .order_by(Ticket.updated_at.desc())
                    .limit(25)
                )
                return len(session.scalars(query).all())

            return run

        cases = [
            ("rare term, ranked", fts("{word}"), args.repeat),
            ("rare term + status:open", fts("{word} status:open"), args.repeat),
            ("rare term, LIKE scan (peer)", like(lambda: rng.choice(RARE_WORDS)), 5),
            ("common term, sorted by recency", fts(COMMON_WORD + " sort:-updated"), 5),
            ("common term, ranked", fts(COMMON_WORD), 5),
            ("common term, LIKE scan (peer)", like(lambda: COMMON_WORD), 5),
        ]
        results = {}
        print(f"corpus: {counts[0]} tickets, {counts[1]} messages, {DATABASE.stat().st_size / 1e6:.0f} MB")
        print("| query | p50 ms | p95 ms | runs | hits |")
        print("|---|---|---|---|---|")
        for name, run, repeat in cases:
            samples, hits = timed(run, repeat)
            results[name] = samples
            print(
                f"| {name} | {statistics.median(samples):.2f} | {percentile(samples, 0.95):.2f} | {repeat} | {hits} |"
            )
        ratio = statistics.median(results["rare term, LIKE scan (peer)"]) / statistics.median(
            results["rare term, ranked"]
        )
        print(f"rare term: FTS5 is {ratio:.0f}x faster than the LIKE scan (p50 ratio)")


if __name__ == "__main__":
    main()
