"""Fill the platform database's api_usage_rollups with believable per-minute rollups of API calls.

    python -m demo.usage_rollups [--db .run/demo/platform.sqlite3] [--rows 100000] [--days 30] [--if-empty]

Until the proxy writes its own rollups (issue 15, item 2), this gives the reports service (and its
benchmark, bench/reports_query.py) data of the real shape: keys with a heavy-tailed share of the calls,
daily and weekly rhythms, mostly 2xx with some 4xx, a few 5xx and 429s on the busiest keys, cumulative
latency buckets. The table is the one declared in exporters/business/schema.py (created when missing).
"""

from __future__ import annotations

import argparse
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy

from exporters.business.schema import LATENCY_BUCKETS_MS, api_usage_rollups

ROUTES = ("/api/v1/users", "/api/v1/users/<id>", "/api/v1/echo", "/api/ai/complete", "/api/ai/embeddings", "other")
TIERS = ("free", "startup", "professional", "enterprise")
BATCH = 20_000


def owners(count: int) -> list[tuple[str, str, str, float]]:
    """(key_id, owner, tier, weight) per demo key; weights fall off like a power law."""
    rng = random.Random(11)
    keys = []
    for n in range(count):
        tier = TIERS[min(3, int(rng.random() ** 1.6 * 4))]
        key_id = f"{rng.getrandbits(256):064x}"
        keys.append((key_id, f"customer-{n + 1:03d}", tier, 1.0 / (n + 1) ** 0.9))
    return keys


def generate_rows(rows: int, days: int, end: datetime, seed: int = 5, keys: int = 120) -> list[dict[str, object]]:
    """``rows`` rollup rows spread over the ``days`` before ``end``; distinct primary keys."""
    rng = random.Random(seed)
    accounts = owners(keys)
    cumulative, total = [], 0.0
    for *_, weight in accounts:
        total += weight
        cumulative.append(total)
    minutes = days * 24 * 60
    start = end.replace(second=0, microsecond=0) - timedelta(minutes=minutes)
    seen: set[tuple[int, int, str, str]] = set()
    out: list[dict[str, object]] = []
    while len(out) < rows:
        offset = rng.randrange(minutes)
        moment = start + timedelta(minutes=offset)
        hour_weight = 0.35 + 0.65 * math.sin(math.pi * ((moment.hour + 18) % 24) / 24) ** 2
        if moment.weekday() >= 5:
            hour_weight *= 0.6
        if rng.random() > hour_weight:
            continue
        key_index = rng.choices(range(keys), cum_weights=cumulative)[0]
        route = rng.choice(ROUTES)
        status = rng.choices(("2xx", "4xx", "5xx", "3xx"), (0.9, 0.07, 0.015, 0.015))[0]
        identity = (offset, key_index, route, status)
        if identity in seen:
            continue
        seen.add(identity)
        key_id, owner, tier, weight = accounts[key_index]
        calls = max(1, int(rng.expovariate(1 / (1 + 40 * weight))))
        refused = int(calls * rng.random() * 0.3) if status == "4xx" and weight > 0.3 else 0
        mean_ms = 420.0 if route.startswith("/api/ai") else 45.0
        latencies = [rng.expovariate(1 / mean_ms) for _ in range(min(calls, 8))]
        scale = calls / len(latencies)
        row: dict[str, object] = {
            "minute": moment,
            "key_id": key_id,
            "route": route,
            "status_class": status,
            "tier": tier,
            "owner": owner,
            "calls": calls,
            "refused": refused,
            "latency_sum_ms": round(sum(latencies) * scale, 3),
            "latency_max_ms": round(max(latencies), 3),
        }
        for bucket in LATENCY_BUCKETS_MS:
            row[f"latency_le_{bucket}ms"] = round(sum(1 for v in latencies if v <= bucket) * scale)
        out.append(row)
    return out


def fill(url: str, rows: int, days: int, if_empty: bool, end: datetime | None = None) -> int:
    """Insert the rows (creating the table when missing); returns how many were written."""
    engine = sqlalchemy.create_engine(url)
    try:
        api_usage_rollups.create(engine, checkfirst=True)
        with engine.begin() as connection:
            if if_empty and connection.execute(sqlalchemy.select(api_usage_rollups.c.minute).limit(1)).first():
                return 0
            generated = generate_rows(rows, days, (end or datetime.now(UTC)).replace(tzinfo=None))
            for first in range(0, len(generated), BATCH):
                connection.execute(api_usage_rollups.insert(), generated[first : first + BATCH])
        return len(generated)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=Path(".run/demo/platform.sqlite3"))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--if-empty", action="store_true", help="do nothing when the table has rows")
    args = parser.parse_args(argv)
    written = fill(f"sqlite:///{args.db}", args.rows, args.days, args.if_empty)
    print(f"wrote {written} api_usage_rollups rows to {args.db}" if written else "api_usage_rollups has data already")


if __name__ == "__main__":
    main()
