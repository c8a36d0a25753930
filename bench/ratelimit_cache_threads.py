"""Cache hits through the proxy at several granian blocking-thread counts, beside nginx ``proxy_cache`` (issue 16).

``server.blocking_threads`` (default 16) is how many requests one granian worker runs at once: a WSGI
request holds its thread while it waits on Redis or the upstream, so workers x threads bounds the proxy's
concurrency. This measures what that setting costs a cache hit, where the only wait is the limiter's Redis
round trip: one proxy per thread count (cache on, 2 workers, one Redis, the nginx origin of
bench/ratelimit_cache.py), each driven with ``wrk -t2 -c32`` on a cacheable path and on an uncacheable one
(the plain proxied path), and nginx ``proxy_cache`` on the same origin, in interleaved rounds (the order
rotating each round). Ratios are per round, against the first thread count given.

Run: .venv/bin/python bench/ratelimit_cache_threads.py [--threads 16,4,2] [--seconds 5 --rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `make bench` runs bench/*.py as scripts

from bench.ratelimit_cache import CACHED, UNCACHED, nginx_cache, nginx_upstream, proxy_config
from bench.ratelimit_proxy import ROOT, granian, median_run, process, wrk
from bench.wsgi_servers import free_port

NGINX = "nginx proxy_cache (x2 workers)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="16,4,2", help="blocking-thread counts, the first the baseline")
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each runs every target once, in turn")
    args = parser.parse_args()
    counts = [int(count) for count in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        directory = Path(tmp)
        redis_port, origin_port = free_port(), free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        origin_url = f"http://127.0.0.1:{origin_port}"
        stack.enter_context(
            process(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"], None)
        )
        stack.enter_context(
            process(["nginx", "-c", str(nginx_upstream(directory, origin_port)), "-p", tmp], origin_url + CACHED)
        )
        targets: dict[str, str] = {}
        for count in counts:
            port = free_port()
            config = proxy_config(directory, f"threads-{count}", redis_url, origin_url, port, True)
            metrics = directory / f"metrics-{count}"
            metrics.mkdir()
            env = {**os.environ, "VIBELUX_RATELIMIT_PROXY_CONFIG": str(config)}
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
            command = granian("ratelimit_proxy.wsgi:app", port)
            command[command.index("--blocking-threads") + 1] = str(count)
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(process(command, url + UNCACHED, env=env, cwd=ROOT))
            targets[f"hit, {count} threads"] = url + CACHED
            targets[f"uncacheable (pass), {count} threads"] = url + UNCACHED
        nginx_port = free_port()
        conf = nginx_cache(directory, "peer", origin_port, nginx_port)
        stack.enter_context(process(["nginx", "-c", str(conf), "-p", tmp], f"http://127.0.0.1:{nginx_port}{CACHED}"))
        targets[NGINX] = f"http://127.0.0.1:{nginx_port}{CACHED}"
        runs: dict[str, list[dict[str, float | str]]] = {name: [] for name in targets}
        order = list(targets)
        for index in range(args.rounds):
            for name in order[index % len(order) :] + order[: index % len(order)]:
                runs[name].append(wrk(targets[name], args.seconds))

    print(f"wrk -t2 -c32 -d{args.seconds}s, {args.rounds} interleaved rounds; median round shown\n")
    print("| target | req/s | p50 | p99 | non-2xx (all rounds) |")
    print("|---|---|---|---|---|")
    for name, result in runs.items():
        m = median_run(result)
        errors = sum(int(r["non_2xx"]) for r in result)
        print(f"| {name} | {float(m['rps']):.0f} | {m['p50']} | {m['p99']} | {errors} |")
    print()

    def ratio(a: str, b: str) -> str:
        per_round = sorted(float(x["rps"]) / float(y["rps"]) for x, y in zip(runs[a], runs[b], strict=True))
        return f"median {statistics.median(per_round):.2f} (rounds {', '.join(f'{r:.2f}' for r in per_round)})"

    base = counts[0]
    for count in counts:
        print(f"- hit / nginx proxy_cache, {count} threads: {ratio(f'hit, {count} threads', NGINX)}")
        if count != base:
            print(f"- hit, {count} / {base} threads: {ratio(f'hit, {count} threads', f'hit, {base} threads')}")
            print(
                f"- pass, {count} / {base} threads: "
                f"{ratio(f'uncacheable (pass), {count} threads', f'uncacheable (pass), {base} threads')}"
            )


if __name__ == "__main__":
    main()
