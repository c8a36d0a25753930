"""Redis failover under bounded load (issue 11): how long the limiter fails open when a primary is
SIGKILLed, on Sentinel and on Cluster, against how long the topology takes to promote a replica.

The scenario is tests/ratelimit_proxy/failover.py (the test asserts the goals; this reports the figures):
``vibelux-proxy serve`` with shipped settings (50 ms timeout, 1 s breaker reset), a victim client at 40
requests a second over a 5/s tier, on a cluster also a client of another shard. Goal: limits resume
within detection + 2 s. Needs redis-server, redis-sentinel.

Run: .venv/bin/python bench/redis_failover.py [--rounds 3] (or `make bench`)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `make bench` runs bench/*.py as scripts

from tests.ratelimit_proxy import failover
from tests.ratelimit_proxy.conftest import Upstream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="kills per topology")
    args = parser.parse_args()
    upstream = Upstream()
    results = []
    try:
        for _ in range(args.rounds):
            for topology in ("sentinel", "cluster"):
                with tempfile.TemporaryDirectory() as tmp:
                    results.append(failover.run(topology, Path(tmp), upstream.url))
    finally:
        upstream.close()
    print(f"SIGKILL of a primary under load, {args.rounds} rounds per topology (seconds from the kill)\n")
    print("| topology | detection (replica promoted) | limits resumed | resumed - detection | unlimited requests "
          "(victim) | 5xx | other shard unlimited |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in results:
        five = sum(n for status, n in r.statuses.items() if status >= 500)
        other = r.undecided("other", after=-10.0) if r.topology == "cluster" else "-"
        print(
            f"| {r.topology} | {r.detection_seconds:.2f} | {r.resumed_seconds:.2f} | "
            f"{r.resumed_seconds - r.detection_seconds:+.2f} | {r.undecided('victim')} | {five} | {other} |"
        )


if __name__ == "__main__":
    main()
