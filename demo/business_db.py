"""Generate a reference-schema SQLite database with months of believable platform history.

    python -m demo.business_db [--out .run/demo/platform.sqlite3] [--users 3000] [--months 14] [--if-stale]

Sign-ups grow over the period with a weekly rhythm; a quarter of them start a 14-day free trial, about a
third of which convert; free users convert to paid plans, upgrade, sometimes downgrade, churn and come back;
each user has their own activity habit, and many new users never return after their first days, so weekly
retention falls steeply and then flattens, and daily, weekly and monthly active users differ; paying users
make most AI requests. History ends now, so the exporter's windows (last day, week, month) all have data. The
file is written beside the target and renamed into place, so a running exporter never reads half of it.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy
from tqdm import tqdm

from exporters.business.schema import ai_requests, metadata, sessions, subscriptions, users

PRICES_USD = {"startup": Decimal("29.00"), "professional": Decimal("99.00"), "enterprise": Decimal("499.00")}
NEXT_PLAN = {"free": "startup", "startup": "professional", "professional": "enterprise"}
PREVIOUS_PLAN = {"professional": "startup", "enterprise": "professional"}
# daily probabilities, tuned for ~3% monthly churn and a paid share around 15-20% after a year
CONVERT_DAILY = {"free": 0.0012, "startup": 0.0015, "professional": 0.001}
DOWNGRADE_DAILY = {"professional": 0.0005, "enterprise": 0.0007}
CHURN_DAILY = 0.001
WIN_BACK_DAILY = 0.004  # chance a former customer comes back to their old plan on a given day
DORMANT_DAILY = 0.003  # chance a user stops coming back for good
# ... much higher in a user's first days (tried it, left): mostly gone by the third week
EARLY_DORMANT_DAILY, EARLY_DORMANT_DAYS = 0.06, 10.0
TRIAL_SHARE = 0.25  # sign-ups who start a free trial
TRIAL_PLANS = {"startup": 0.7, "professional": 0.3}  # which plan they try
TRIAL_DAYS = 14
TRIAL_CONVERTS = 0.3  # share of trials that convert when they end
TRIAL_EARLY_DAILY = 0.005  # chance a trial converts on a given day before its end
AI_REQUESTS_PER_ACTIVE_DAY = {"free": 0.3, "startup": 2.0, "professional": 5.0, "enterprise": 12.0}
AI_MODELS = ("vibe-small", "vibe-medium", "vibe-large")
BATCH_ROWS = 20_000


@dataclass
class DemoUser:
    id: int
    signed_up_at: datetime
    habit: float  # chance of being active on a given day
    tier: str = "free"
    subscription: dict[str, Any] | None = None
    trial_ends_at: datetime | None = None  # while a trial runs
    former_plan: str | None = None  # the plan a customer who churned paid for


@dataclass
class History:
    """Rows generated so far; activity rows are flushed to the database in batches."""

    users: list[DemoUser] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    ai_requests: list[dict[str, Any]] = field(default_factory=list)


def change_plan(
    history: History, user: DemoUser, plan: str, at: datetime, ending_status: str, trial: bool = False
) -> None:
    """End the user's current subscription (if any) with `ending_status`; start `plan` unless it is free
    (a trial of it: at no charge, "trialing" until it converts or expires)."""
    if user.subscription is not None:
        user.subscription["ended_at"] = at
        user.subscription["status"] = ending_status
        user.subscription = None
    user.tier = plan
    user.trial_ends_at = at + timedelta(days=TRIAL_DAYS) if trial else None
    if plan != "free":
        row = {
            "id": len(history.subscriptions) + 1,
            "user_id": user.id,
            "plan": plan,
            "status": "trialing" if trial else "active",
            "monthly_amount_usd": Decimal("0.00") if trial else PRICES_USD[plan],
            "started_at": at,
            "ended_at": None,
        }
        history.subscriptions.append(row)
        user.subscription = row


def trial_day(history: History, rng: random.Random, user: DemoUser, moment: datetime, day_end: datetime) -> None:
    """A day of a running trial: it may convert early; on its last day it converts or expires."""
    assert user.trial_ends_at is not None
    if user.trial_ends_at < day_end:
        outcome = "converted" if rng.random() < TRIAL_CONVERTS else "expired"
        change_plan(history, user, user.tier if outcome == "converted" else "free", user.trial_ends_at, outcome)
    elif rng.random() < TRIAL_EARLY_DAILY:
        change_plan(history, user, user.tier, moment, "converted")


def simulate_day(history: History, rng: random.Random, day_start: datetime, signups: int, end: datetime) -> None:
    """One day: new users, plan changes, sessions and AI requests, all before `end` (now)."""
    seconds_in_day = min(86_400, int((end - day_start).total_seconds()))
    if seconds_in_day <= 0:
        return

    def moment() -> datetime:
        return day_start + timedelta(seconds=rng.randrange(seconds_in_day))

    day_end = day_start + timedelta(seconds=seconds_in_day)
    for _ in range(signups):
        user = DemoUser(len(history.users) + 1, moment(), habit=rng.betavariate(0.7, 4.0))
        history.users.append(user)
        start = rng.random()
        if start < TRIAL_SHARE:
            plan = rng.choices(list(TRIAL_PLANS), weights=list(TRIAL_PLANS.values()))[0]
            change_plan(history, user, plan, user.signed_up_at, "upgraded", trial=True)
        elif start < TRIAL_SHARE + 0.05:  # some start paying on day one
            change_plan(history, user, "startup", user.signed_up_at, "upgraded")
    for user in history.users:
        if user.signed_up_at >= day_end:
            continue
        at = max(moment(), user.signed_up_at)
        if user.trial_ends_at is not None:
            trial_day(history, rng, user, at, day_end)
        elif user.tier != "free" and rng.random() < CHURN_DAILY:
            user.former_plan = user.tier
            change_plan(history, user, "free", at, "churned")
        elif user.former_plan and user.tier == "free" and rng.random() < WIN_BACK_DAILY:
            change_plan(history, user, user.former_plan, at, "churned")
        elif user.tier in DOWNGRADE_DAILY and rng.random() < DOWNGRADE_DAILY[user.tier]:
            change_plan(history, user, PREVIOUS_PLAN[user.tier], at, "downgraded")
        elif user.tier in CONVERT_DAILY and rng.random() < CONVERT_DAILY[user.tier]:
            change_plan(history, user, NEXT_PLAN[user.tier], at, "upgraded")
        age_days = (day_start - user.signed_up_at).total_seconds() / 86_400
        if rng.random() < DORMANT_DAILY + EARLY_DORMANT_DAILY * math.exp(-max(0.0, age_days) / EARLY_DORMANT_DAYS):
            user.habit = 0.0
        if rng.random() >= user.habit:
            continue
        started = max(moment(), user.signed_up_at)
        last_activity = min(started + timedelta(minutes=rng.expovariate(1 / 25)), end)
        history.sessions.append({"user_id": user.id, "started_at": started, "last_activity_at": last_activity})
        mean_requests = AI_REQUESTS_PER_ACTIVE_DAY[user.tier]
        for _ in range(poisson(rng, mean_requests)):
            history.ai_requests.append({
                "user_id": user.id,
                "created_at": started + (last_activity - started) * rng.random(),
                "model": rng.choice(AI_MODELS),
                "tokens": int(rng.lognormvariate(6.5, 0.8)),
            })  # fmt: skip


def poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: fine for the small means used here."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def daily_signups(day: int, days: int, total_users: int, rng: random.Random) -> int:
    """Sign-ups growing linearly from 0.5x to 1.5x the average, fewer at weekends, with noise."""
    average = total_users / days
    trend = 0.5 + day / max(1, days - 1)
    weekend = 0.6 if day % 7 in (5, 6) else 1.1
    return max(0, round(rng.gauss(average * trend * weekend, math.sqrt(average))))


def flush(connection: sqlalchemy.Connection, history: History, force: bool = False) -> None:
    for table, rows in ((sessions, history.sessions), (ai_requests, history.ai_requests)):
        if rows and (force or len(rows) >= BATCH_ROWS):
            connection.execute(table.insert(), rows)
            rows.clear()


def generate(out: Path, total_users: int, months: int, seed: int, progress: bool = True) -> dict[str, int]:
    """Write the database to `out` (replacing it atomically); return row counts per table."""
    rng = random.Random(seed)
    end = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    days = round(months * 365 / 12)
    first_day = (end - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    engine = sqlalchemy.create_engine(f"sqlite:///{partial}")
    metadata.create_all(engine)
    history = History()
    counts = {"sessions": 0, "ai_requests": 0}
    with engine.begin() as connection:
        for day in tqdm(range(days), desc="days of history", unit="day", disable=not progress):
            simulate_day(history, rng, first_day + timedelta(days=day), daily_signups(day, days, total_users, rng), end)
            counts["sessions"] += len(history.sessions)
            counts["ai_requests"] += len(history.ai_requests)
            flush(connection, history)
            counts["sessions"] -= len(history.sessions)
            counts["ai_requests"] -= len(history.ai_requests)
        counts["sessions"] += len(history.sessions)
        counts["ai_requests"] += len(history.ai_requests)
        flush(connection, history, force=True)
        connection.execute(
            users.insert(), [{"id": u.id, "signed_up_at": u.signed_up_at, "tier": u.tier} for u in history.users]
        )
        if history.subscriptions:
            connection.execute(subscriptions.insert(), history.subscriptions)
    engine.dispose()
    partial.replace(out)
    return {"users": len(history.users), "subscriptions": len(history.subscriptions), **counts}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".run/demo/platform.sqlite3"))
    parser.add_argument("--users", type=int, default=3000, help="about how many users sign up over the period")
    # 14: the 12-month revenue retention needs customers paying at the start of the month 12 months back
    parser.add_argument("--months", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--if-stale", action="store_true", help="do nothing when --out exists and is less than a day old"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.users < 1 or args.months < 1:
        parser.error("--users and --months must be at least 1")
    # history ends at generation time: a day later the "last day" windows would start to empty out
    if args.if_stale and args.out.exists() and time.time() - args.out.stat().st_mtime < 86_400:
        return
    counts = generate(args.out, args.users, args.months, args.seed, progress=not args.quiet)
    print(f"wrote {args.out}: " + ", ".join(f"{count} {table}" for table, count in counts.items()))


if __name__ == "__main__":
    main()
