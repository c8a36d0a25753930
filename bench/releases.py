"""Releases through the proxy's colours under bounded load (issue 17 item 6): 200 requests per second for
60 s over keep-alive sessions (half GET /api/v1/users, half POST /api/v1/echo, 200 API keys), real
processes on loopback: two demo upstream colours, the proxy (granian, 1 worker, and its admin API), Redis,
Prometheus scraping every second, and ``vibelux-release`` as its own process.

Scenarios:
- ``switch``: blue -> green by 5, 25, 50, 100% with an analysis after each step;
- ``rollback``: the same, aborted by the operator at 50%: blue back to 100%;
- ``failing``: green answers 20% of the API's requests 500: rolled back by the analysis, with the times;
- ``never-ready``: green's /readyz answers 503: the gate fails, green receives nothing.

Run: ``.venv/bin/python -m bench.releases [--seconds 60] [--rps 200] [--interval 10] [scenario ...]``
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from tests.releases.rig import DemoColour, Load, LoadReport, ProxyStack, prometheus_for, proxy_config, release_state
from tests.servers import RedisServer, wait_until

SCENARIOS = ("switch", "rollback", "failing", "never-ready")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def event_time(state: dict[str, Any], event: str, first: bool = True) -> float | None:
    times = [e["at"] for e in state["events"] if e["event"] == event]
    return (times[0] if first else times[-1]) if times else None


def run(scenario: str, seconds: float, rps: float, interval: float) -> dict[str, Any]:
    redis = RedisServer()
    redis.start()
    blue = DemoColour("blue")
    green = DemoColour("green", 20 if scenario == "failing" else 0, scenario == "never-ready")
    stack = ProxyStack()
    prometheus = prometheus_for(stack)
    stack.config = proxy_config(
        blue,
        green,
        redis.url,
        prometheus.url,
        steps=[5, 25, 50, 100],
        gate={"timeout_seconds": interval, "retry_seconds": 1.0, "smoke": [{"path": "/api/v1/users"}]},
        analysis={"interval_seconds": interval, "window_seconds": interval, "min_requests": 20},
    )
    processes = [redis, blue, green, stack, prometheus]
    try:
        for process in processes[1:]:
            process.start()
        load = Load(stack.url, rps, threads=16).start()
        began = time.time()
        time.sleep(5.0)
        controller = stack.release_cli("start", "green", "--wait", wait=False)
        aborted_at = None
        if scenario == "rollback":
            wait_until(lambda: (release_state(stack) or {}).get("weight") == 50, timeout=seconds)
            aborted_at = time.time()
            stack.admin("POST", "/releases/current/abort").raise_for_status()
        controller.wait(seconds + 120)
        released = time.time()
        left = began + seconds - time.time()
        if left > 0:
            time.sleep(left)
        report = load.stop()
        state = release_state(stack) or {}
        green_api = sum(n for path, n in green.served().items() if path.startswith("/api/"))
        return summarise(scenario, report, state, began, released, aborted_at, green_api, interval, rps)
    finally:
        for process in reversed(processes):
            process.close()


def summarise(
    scenario: str,
    report: LoadReport,
    state: dict[str, Any],
    began: float,
    released: float,
    aborted_at: float | None,
    green_api: int,
    interval: float,
    rps: float,
) -> dict[str, Any]:
    resets = sum(n for kind, n in report.failures.items() if "Connection" in kind)
    row: dict[str, Any] = {
        "scenario": scenario,
        "status": state.get("status"),
        "message": state.get("message"),
        "sent": report.sent,
        "achieved_rps": round(report.sent / max(1e-9, time.time() - began), 1),
        "target_rps": rps,
        "failed": report.failed,
        "resets": resets,
        "proxy_5xx": report.proxy_errors,
        "statuses": dict(report.statuses),
        "by_colour": dict(report.colours),
        "green_api_requests_served": green_api,
        "p50_ms": round(percentile(report.latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(report.latencies, 0.99) * 1000, 2),
        "interval_s": interval,
        "release_s": round(released - (event_time(state, "started") or released), 1),
    }
    # each analysis' verdict: which checks it judged (the p99 needs min_latency_requests of the colour)
    row["analyses"] = [e["message"] for e in state.get("events", []) if "analysis" in e["message"]]
    if aborted_at is not None:
        row["abort_to_blue_s"] = round((event_time(state, "aborted") or 0) - aborted_at, 2)
    if scenario == "failing":
        step = event_time(state, "step")
        first_500 = report.first_error.get("green")
        rolled = event_time(state, "rolled_back")
        last_green = report.colour_after.get("green")
        if step and rolled and first_500 and last_green:
            row["first_green_500_after_step_s"] = round(first_500 - step, 2)
            row["rolled_back_after_first_green_500_s"] = round(rolled - first_500, 2)
            row["last_green_answer_after_rollback_s"] = round(last_green - rolled, 2)
        row["analysis"] = state.get("last_analysis", {}).get("message")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="scenario", help=f"any of {', '.join(SCENARIOS)}; default: all")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--interval", type=float, default=10.0, help="analysis interval and window (s)")
    args = parser.parse_args()
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}: choose from {', '.join(SCENARIOS)}")
    for scenario in args.scenarios or SCENARIOS:
        row = run(scenario, args.seconds, args.rps, args.interval)
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
