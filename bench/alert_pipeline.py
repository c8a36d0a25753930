"""Time from fault to incident ticket (and from recovery to resolved ticket) through the real pipeline.

    .venv/bin/python bench/alert_pipeline.py [--runs 5]   (or python -m bench.alert_pipeline)

Stops a probed Redis, waits for the ServiceDown ticket in the support desk, restarts Redis, waits for the
ticket to resolve; repeats. Compares each time with the floor the configured intervals allow (`for` +
group_wait) and with the sum of every interval (worst case), in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `make bench` runs it as a file

from tests.alerts.stack import AlertingStack, measure_fault_to_ticket
from tests.servers import wait_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    stack = AlertingStack()
    try:
        timers = stack.timers
        results = []
        for run in range(args.runs):
            wait_until(lambda: stack.prometheus.query('ALERTS{alertname="ServiceDown"}') == [], timeout=60)
            wait_until(lambda: stack.prometheus.query('service_up{service="redis"} == 1') != [], timeout=30)
            time.sleep(1.0)
            results.append(measure_fault_to_ticket(stack))
            print(f"run {run + 1}: {results[-1]}", file=sys.stderr)
    finally:
        stack.close()
    print(f"timers: {timers}")
    print(
        f"fault -> ticket: floor {timers.floor:.1f}s (new group: for + group_wait), "
        f"{timers.refire_floor:.1f}s (existing group: for), worst case {timers.worst_case:.1f}s; "
        f"recovery -> resolved: worst case {timers.resolve_worst_case:.1f}s"
    )
    print("| run | alert group | fault -> ticket | its floor | ratio | recovery -> resolved |")
    print("|---|---|---|---|---|---|")
    for run, result in enumerate(results):
        floor = timers.floor if run == 0 else timers.refire_floor
        print(
            f"| {run + 1} | {'new' if run == 0 else 'existing'} | {result['fault_to_ticket']:.2f}s | "
            f"{floor:.1f}s | {result['fault_to_ticket'] / floor:.2f} | {result['recovery_to_resolved']:.2f}s |"
        )
    refires = [r["fault_to_ticket"] for r in results[1:]]
    if refires:
        print(f"re-fires: median {statistics.median(refires):.2f}s, max {max(refires):.2f}s")
    resolves = [r["recovery_to_resolved"] for r in results]
    print(f"recovery -> resolved: median {statistics.median(resolves):.2f}s, max {max(resolves):.2f}s")


if __name__ == "__main__":
    main()
