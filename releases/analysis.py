"""The release analysis: measurements of the new and the old colour in, a verdict out. No I/O, no clock
(tests/vectors/releases_analysis/ pin it).

Order of checks, the ones that need no comparison first:

1. no data (no request of the new colour in the window, or Prometheus had no series): inconclusive;
2. fewer than ``min_requests``: inconclusive (5 requests with one error is not a 20% error ratio);
3. ``error_ratio`` against ``max_error_ratio``; ``error_ratio_vs_old`` (the increase over the old
   colour's) when the old colour has data;
4. ``p99`` against ``max_p99_seconds`` (no latency data with requests: inconclusive); ``p99_vs_old``
   against ``max_p99_factor`` times the old colour's when it has data and the difference is more than
   ``p99_margin_seconds``. Why the margin: the proxy's latency buckets are 10, 25, 50, 100 ms apart at
   these latencies, so a canary with a few hundred requests shows a p99 of twice the old colour's from one
   bucket's interpolation alone (bench/RESULTS.md: a healthy green rolled back at 5% for 2.07x before it).
   Both only from ``min_latency_requests`` (100) requests of the colour in the window: with fewer, the
   p99's rank (0.99 n) lies above the second slowest request, so the single slowest request sets it, and
   one request held up by a busy machine is enough to roll back a healthy canary (how the release scenario
   test failed once on a loaded machine: about 30 requests of green a window at 25%). Below that the p99
   is not judged and the verdict says so; the error checks still are. The old colour's p99 is compared
   only when it too comes from that many requests.

The first failing check fails the analysis, and its name and value are the verdict's. Why "no data" is
never a pass: Argo Rollouts users found an empty Prometheus result either erroring the analysis or, with
a lenient condition, passing it; a release then promotes on silence. Here silence holds the step.
The old colour without data (at 100% it gets none) is not a reason to hold: the comparisons are skipped
and the message says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Result = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Measurement:
    """One colour over the window; None: Prometheus had no answer (empty result or NaN)."""

    requests: float | None = None
    error_ratio: float | None = None
    p99_seconds: float | None = None


@dataclass(frozen=True)
class Thresholds:
    min_requests: int = 20
    max_error_ratio: float = 0.05
    max_error_ratio_increase: float = 0.02
    max_p99_seconds: float = 1.0
    max_p99_factor: float = 1.5
    p99_margin_seconds: float = 0.05
    min_latency_requests: int = 100  # fewer: the slowest request alone is the p99 (module docstring)


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    passed: bool


@dataclass(frozen=True)
class Verdict:
    result: Result
    check: str  # the failing or deciding check; "" when all passed
    value: float | None
    message: str
    checks: list[Check] = field(default_factory=list)


def known(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def analyse(
    new: Measurement, old: Measurement, limits: Thresholds, new_name: str = "new", old_name: str = "old"
) -> Verdict:
    """The verdict on ``new`` (see the module docstring for the order)."""
    requests = known(new.requests)
    if not requests:
        return Verdict("inconclusive", "no_data", None, f"no data: {new_name} served no request in the window")
    if requests < limits.min_requests:
        message = f"too few requests: {new_name} served {requests:g}, fewer than {limits.min_requests}"
        return Verdict("inconclusive", "min_requests", requests, message)
    error_ratio = known(new.error_ratio)
    if error_ratio is None:
        return Verdict("inconclusive", "no_data", None, f"no data: no error ratio for {new_name}")
    checks = [Check("error_ratio", error_ratio, limits.max_error_ratio, error_ratio <= limits.max_error_ratio)]
    old_ratio, old_p99 = known(old.error_ratio), known(old.p99_seconds)
    if old_ratio is not None:
        increase = error_ratio - old_ratio
        limit = limits.max_error_ratio_increase
        checks.append(Check("error_ratio_vs_old", increase, limit, increase <= limit))
    p99 = known(new.p99_seconds)
    judged = requests >= limits.min_latency_requests  # fewer: the slowest request alone would be the p99
    if judged and p99 is None:
        failed = next((c for c in checks if not c.passed), None)
        if failed is None:
            return Verdict("inconclusive", "no_data", None, f"no data: no p99 latency for {new_name}", checks)
    elif judged and p99 is not None:
        checks.append(Check("p99", p99, limits.max_p99_seconds, p99 <= limits.max_p99_seconds))
        old_judged = (known(old.requests) or 0) >= limits.min_latency_requests
        if old_p99 is not None and old_p99 > 0 and old_judged:
            factor = p99 / old_p99
            within = factor <= limits.max_p99_factor or p99 - old_p99 <= limits.p99_margin_seconds
            checks.append(Check("p99_vs_old", factor, limits.max_p99_factor, within))
    for check in checks:
        if not check.passed:
            message = f"analysis failed: {check.name} of {new_name} is {check.value:.4g}, above {check.limit:g}"
            return Verdict("fail", check.name, check.value, message, checks)
    compared = "" if old_ratio is not None else f" ({old_name}: no data, thresholds only)"
    if not judged:
        compared += f"; p99 not judged: {requests:g} requests, fewer than {limits.min_latency_requests}"
    summary = ", ".join(f"{c.name}={c.value:.4g}" for c in checks)
    return Verdict("pass", "", None, f"analysis passed: {summary}{compared}", checks)
