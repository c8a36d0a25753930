"""Cohort maths: signup-week retention, MRR movements, revenue retention, ARPU by tier, trial conversion.

Pure: plain records and an explicit `now` in, plain results out; no I/O and no wall clock, so the same
inputs give the same figures in a test, in a vector file (tests/vectors/business) and in the exporter. The
SQL around it (exporters/business/analytics.py) only selects rows; every rule below lives here.

Periods are UTC calendar weeks (Monday 00:00) and calendar months, counted back from the one holding `now`:
index 0 is the current period, which is still in progress; index 11 began eleven periods earlier. The index
is relative, so the labels a grid needs stay bounded (12 cohorts x 12 weeks) and never grow with dates.

- **Retention.** Cohort c: the users who signed up in the week c weeks ago. Week N of a cohort is the Nth
  calendar week after its signup week, so the cell (c, N) is the week c - N weeks ago: cells with N > c
  have not happened and do not exist (the triangle), and N == c is the current week, in progress. Week 0 is
  100% by definition (signing up is activity). From week 1 on, a user is retained when one of their
  sessions was active in that week: a session is active over [started_at, last_activity_at] (a row whose
  last activity precedes its start counts at its last activity only), clipped to `now`.
  Calendar weeks rather than 7-day windows from each user's signup: every cell then has one denominator
  (the cohort) and one state (complete or the current week), and "week 1" is the same week for everyone in
  the cohort; the cost is that a Sunday sign-up's week 1 starts a day later.
- **MRR** at instant t: the sum of the amounts of the rows with started_at <= t < ended_at (or no end), as
  the schema defines it. Money is handled in integer cents, so the movement identity is exact.
- **Movements of a month**, per customer, from their MRR a at the month's start to b at its end (now, for
  the current month): new (a = 0 < b, never paid before), reactivation (a = 0 < b, paid before), expansion
  (0 < a < b, by b - a), contraction (0 < b < a, by a - b), churn (a > 0 = b, by a). Amounts are positive;
  opening + new + expansion + reactivation - contraction - churn = closing, exactly. A customer who left and
  came back within one month moved nothing (month-end snapshots, the usual convention).
- **Revenue retention** over the customers paying at the start: net = sum(b) / sum(a), gross =
  sum(min(a, b)) / sum(a) (never above 1); per month, and over the last 12 complete months (from the
  start of the month 12 months ago to the start of the current one).
- **ARPU by tier** now: the MRR of a plan over the customers paying for it.
- **Trial conversion** per month: of the trials that ended in the month, the share that converted (status
  "converted": the platform's own record that the trial became a paid subscription).

Figures that cannot be computed are absent, never 0: a ratio over nobody, and any period that ended before
the platform's history began (its first sign-up), where there are no rows because there was nothing yet.
A period with history and nothing in it is a true 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from exporters.business.schema import TRIAL_STATUSES

WEEKS = 12
MONTHS = 12
MOVEMENTS = ("new", "expansion", "contraction", "churn", "reactivation")
# Growth first, losses second: the order of the identity (closing = opening + gains - losses).
GAINS = ("new", "expansion", "reactivation")
LOSSES = ("contraction", "churn")
RUNNING_TRIAL = TRIAL_STATUSES[0]  # "trialing"
TRIAL_OUTCOMES = TRIAL_STATUSES[1:]  # how a trial ends: "converted", "expired"

UserId = Hashable


# Calendar -----------------------------------------------------------------------------------------------


def week_start(t: datetime, weeks_back: int = 0) -> datetime:
    """Monday 00:00 of the week holding `t`, `weeks_back` weeks earlier."""
    monday = t.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=t.weekday())
    return monday - timedelta(weeks=weeks_back)


def month_start(t: datetime, months_back: int = 0) -> datetime:
    """The first of the month holding `t` at 00:00, `months_back` months earlier (negative: later)."""
    months = t.year * 12 + (t.month - 1) - months_back
    return datetime(months // 12, months % 12 + 1, 1)  # naive UTC, as the schema stores time


def weeks_ago(t: datetime, now: datetime) -> int:
    """How many calendar weeks before the week of `now` the week of `t` is (0: the same week)."""
    return (week_start(now) - week_start(t)).days // 7


def history_covers(first_signup_at: datetime | None, period_end: datetime | None, now: datetime) -> bool:
    """Whether a period ending at `period_end` (exclusive; None: the current one) saw any of the platform's
    history, which begins with its first sign-up. Before that there is no data, which is not zero."""
    if first_signup_at is None or first_signup_at > now:
        return False
    return period_end is None or first_signup_at < period_end


# Records ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signup:
    user_id: UserId
    signed_up_at: datetime


@dataclass(frozen=True)
class Activity:
    """One session: active from started_at to last_activity_at."""

    user_id: UserId
    started_at: datetime
    last_activity_at: datetime


@dataclass(frozen=True)
class Subscription:
    """One row of subscriptions: a period of a plan at an amount (0 for a trial)."""

    user_id: UserId
    plan: str
    amount_cents: int
    started_at: datetime
    ended_at: datetime | None
    status: str = "active"

    def covers(self, t: datetime) -> bool:
        return self.started_at <= t and (self.ended_at is None or t < self.ended_at)


# Retention ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionGrid:
    """Cohort c (weeks ago) x week N. Only cells that exist are present: c within history, N <= c."""

    cohort_starts: tuple[datetime, ...]  # Monday of each cohort's signup week, by cohort index
    cohort_users: dict[int, int]  # cohorts the history covers -> users who signed up that week
    retained: dict[tuple[int, int], int]  # (cohort, week) -> users active in week N (week 0: all of them)

    def ratio(self, cohort: int, week: int) -> float | None:
        users = self.cohort_users.get(cohort, 0)
        if (cohort, week) not in self.retained or users == 0:
            return None
        return self.retained[(cohort, week)] / users

    @staticmethod
    def in_progress(cohort: int, week: int) -> bool:
        return cohort - week == 0  # the cell's week is the current one


def weekly_retention(
    signups: Iterable[Signup],
    activity: Iterable[Activity],
    first_signup_at: datetime | None,
    now: datetime,
    weeks: int = WEEKS,
) -> RetentionGrid:
    """The signup-week x week-N grid of the last `weeks` cohorts (see the module docstring)."""
    starts = tuple(week_start(now, c) for c in range(weeks))
    covered = [c for c in range(weeks) if history_covers(first_signup_at, starts[c] + timedelta(weeks=1), now)]
    cohort_of: dict[UserId, int] = {}
    for signup in signups:
        if signup.signed_up_at <= now and signup.signed_up_at >= starts[-1]:
            cohort_of[signup.user_id] = weeks_ago(signup.signed_up_at, now)
    active_weeks: dict[UserId, set[int]] = defaultdict(set)
    for session in activity:
        if session.user_id not in cohort_of:
            continue
        first = min(session.started_at, session.last_activity_at)  # a reversed row: its last activity only
        last = min(session.last_activity_at, now)
        if first > last:
            continue  # starts after now
        # weeks_ago shrinks as time goes on: the session touches every week from its last back to its first
        active_weeks[session.user_id].update(range(weeks_ago(last, now), min(weeks_ago(first, now), weeks - 1) + 1))
    users = {c: 0 for c in covered}
    retained = {(c, n): 0 for c in covered for n in range(c + 1)}
    for user, cohort in cohort_of.items():
        if cohort not in users:
            continue
        users[cohort] += 1
        retained[(cohort, 0)] += 1
        for week in active_weeks.get(user, ()):
            n = cohort - week
            if 1 <= n <= cohort:
                retained[(cohort, n)] += 1
    return RetentionGrid(starts, users, retained)


# Revenue ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionRatios:
    opening_cents: int  # MRR at the start from the customers paying then
    kept_cents: int  # what those customers pay at the end, capped at what each paid at the start
    end_cents: int  # what those customers pay at the end

    @property
    def net(self) -> float | None:
        return self.end_cents / self.opening_cents if self.opening_cents else None

    @property
    def gross(self) -> float | None:
        return self.kept_cents / self.opening_cents if self.opening_cents else None


@dataclass(frozen=True)
class MonthMovements:
    start: datetime
    opening_cents: int
    closing_cents: int
    movements: dict[str, int]  # each of MOVEMENTS -> cents, all >= 0
    retention: RetentionRatios


@dataclass(frozen=True)
class Revenue:
    month_starts: tuple[datetime, ...]  # by month index
    months: dict[int, MonthMovements]  # months the history covers
    retention_12m: RetentionRatios  # the last `months` complete months: start of month `months` to month 0
    mrr_by_tier_cents: dict[str, int]  # now, per plan
    paying_customers: dict[str, int]  # now, per plan

    def arpu_cents(self, tier: str) -> float | None:
        customers = self.paying_customers.get(tier, 0)
        return self.mrr_by_tier_cents.get(tier, 0) / customers if customers else None


def _mrr_by_user(rows_by_user: Mapping[UserId, Sequence[Subscription]], t: datetime) -> dict[UserId, int]:
    return {user: sum(row.amount_cents for row in rows if row.covers(t)) for user, rows in rows_by_user.items()}


def _ratios(before: Mapping[UserId, int], after: Mapping[UserId, int]) -> RetentionRatios:
    paying = [user for user, amount in before.items() if amount > 0]
    return RetentionRatios(
        opening_cents=sum(before[u] for u in paying),
        kept_cents=sum(min(before[u], after[u]) for u in paying),
        end_cents=sum(after[u] for u in paying),
    )


def revenue(
    subscriptions: Iterable[Subscription],
    first_paid_at: Mapping[UserId, datetime],
    first_signup_at: datetime | None,
    now: datetime,
    tiers: Sequence[str],
    months: int = MONTHS,
) -> Revenue:
    """MRR movements and revenue retention of the last `months` months, ARPU and customers per tier now.

    `subscriptions` need only cover the window (rows still running at the start of the month `months`
    months back); `first_paid_at` is each customer's first paid start over all history, which tells a new
    customer from a returning one. Zero-amount rows (trials) are never revenue. Plans outside `tiers`
    count under "other".
    """
    rows_by_user: dict[UserId, list[Subscription]] = defaultdict(list)
    for row in subscriptions:
        if row.amount_cents > 0 and row.started_at <= now:
            rows_by_user[row.user_id].append(row)
    starts = tuple(month_start(now, m) for m in range(months + 1))
    # MRR per customer at each month start, and now (the end of the current month so far)
    at = {m: _mrr_by_user(rows_by_user, starts[m]) for m in range(months + 1)}
    at_now = _mrr_by_user(rows_by_user, now)
    figures: dict[int, MonthMovements] = {}
    for m in range(months):
        end = None if m == 0 else starts[m - 1]
        if not history_covers(first_signup_at, end, now):
            continue
        before, after = at[m], at_now if end is None else at[m - 1]
        moved = dict.fromkeys(MOVEMENTS, 0)
        for user in rows_by_user:
            a, b = before[user], after[user]
            if a == 0 and b > 0:
                paid_before = user in first_paid_at and first_paid_at[user] < starts[m]
                moved["reactivation" if paid_before else "new"] += b
            elif 0 < a < b:
                moved["expansion"] += b - a
            elif 0 < b < a:
                moved["contraction"] += a - b
            elif a > 0 and b == 0:
                moved["churn"] += a
        figures[m] = MonthMovements(starts[m], sum(before.values()), sum(after.values()), moved, _ratios(before, after))
    mrr_by_tier: dict[str, int] = dict.fromkeys(tiers, 0)
    customers: dict[str, set[UserId]] = {tier: set() for tier in tiers}
    for user, rows in rows_by_user.items():
        for row in rows:
            if row.covers(now):
                tier = row.plan if row.plan in tiers else "other"
                mrr_by_tier[tier] = mrr_by_tier.get(tier, 0) + row.amount_cents
                customers.setdefault(tier, set()).add(user)
    return Revenue(
        month_starts=starts[:months],
        months=figures,
        retention_12m=_ratios(at[months], at[0]),
        mrr_by_tier_cents=mrr_by_tier,
        paying_customers={tier: len(users) for tier, users in customers.items()},
    )


# Trials -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trials:
    month_starts: tuple[datetime, ...]
    ended: dict[int, dict[str, int]]  # months the history covers -> outcome -> trials that ended so
    running: int  # trials running now

    def conversion(self, month: int) -> float | None:
        outcomes = self.ended.get(month)
        decided = sum(outcomes.values()) if outcomes else 0
        return outcomes["converted"] / decided if outcomes and decided else None


def trial_conversion(
    trials: Iterable[Subscription], first_signup_at: datetime | None, now: datetime, months: int = MONTHS
) -> Trials:
    """Trials that ended in each of the last `months` months by outcome, and the trials running now.

    A trial is a subscriptions row with status "trialing" (running), "converted" or "expired" (ended at
    ended_at). Rows with other statuses, and ends after `now`, are not trials that ended (yet).
    """
    starts = tuple(month_start(now, m) for m in range(months))
    ended = {
        m: dict.fromkeys(TRIAL_OUTCOMES, 0)
        for m in range(months)
        if history_covers(first_signup_at, None if m == 0 else starts[m - 1], now)
    }
    running = 0
    for trial in trials:
        if trial.status == RUNNING_TRIAL:
            running += trial.covers(now)
        elif trial.status in TRIAL_OUTCOMES and trial.ended_at is not None and starts[-1] <= trial.ended_at <= now:
            month = next(m for m in range(months) if trial.ended_at >= starts[m])
            if month in ended:
                ended[month][trial.status] += 1
    return Trials(starts, ended, running)
