"""The over-limit cache (issue 11): a flooding client's refusals per second against admitted requests per
second, through the same proxy build in one run. Needs redis-server, nginx, wrk.

Three proxies (granian x2 each, one Redis, one nginx upstream), wrk -t2 -c32 against each in interleaved
rounds, all from one client address (the anonymous tier's bucket):
- admitted: a tier too large to reach; every request is decided by Redis and forwarded;
- refused, cache on: a tier of 1 request a minute, so after the first all are 429s;
- refused, cache off (``limits.over_limit_cache_entries: 0``): the same, each refusal decided by Redis.
Redis calls per refused request come from INFO commandstats (EVALSHA calls during the flood / requests).

Run: .venv/bin/python bench/ratelimit_refusals.py [--seconds 5 --rounds 5] (or `make bench`)
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import redis
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `make bench` runs bench/*.py as scripts

from bench.ratelimit_proxy import HUGE, PATH, ROOT, granian, median_run, nginx_conf, process, wrk, wrk_arguments
from bench.wsgi_servers import free_port

ADMITTED = "admitted (every request decided by Redis, forwarded)"
CACHED = "refused, over-limit cache on"
UNCACHED = "refused, over-limit cache off"


def config(directory: Path, name: str, redis_url: str, upstream_url: str, port: int, quota: int, cache: int) -> Path:
    path = directory / f"{name}.yml"
    tier = {"burst_per_second": quota, "per_minute": quota, "per_hour": max(quota, 1), "ai_per_day": HUGE}
    off = {rule: {"mode": "off"} for rule in ("limit_breaches", "scanning", "attack_paths", "many_keys")}
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"port": port, "workers": 2, "blocking_threads": 16},
                "upstream": {"url": upstream_url},
                "redis": {"url": redis_url},
                "limits": {"tiers": {"free": tier}, "over_limit_cache_entries": cache},
                "abuse": off,  # a flood would be banned, and bans are cheaper still: measure the limiter
                "log_proxied_requests": False,
                "logging": {"level": "WARNING"},
            }
        )
    )
    return path


def main() -> None:
    args = wrk_arguments(__doc__)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        directory = Path(tmp)
        redis_port, upstream_port = free_port(), free_port()
        redis_url, upstream_url = f"redis://127.0.0.1:{redis_port}/0", f"http://127.0.0.1:{upstream_port}"
        upstream_conf, _ = nginx_conf(directory, upstream_port, free_port())
        stack.enter_context(
            process(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"], None)
        )
        stack.enter_context(process(["nginx", "-c", str(upstream_conf), "-p", tmp], upstream_url + PATH))
        targets: dict[str, str] = {}
        for name, quota, cache in ((ADMITTED, HUGE, 100_000), (CACHED, 1, 100_000), (UNCACHED, 1, 0)):
            port = free_port()
            path = config(directory, f"proxy-{port}", redis_url, upstream_url, port, quota, cache)
            env = {**os.environ, "VIBELUX_RATELIMIT_PROXY_CONFIG": str(path)}
            env["PROMETHEUS_MULTIPROC_DIR"] = str(directory / f"metrics-{port}")
            (directory / f"metrics-{port}").mkdir()
            targets[name] = f"http://127.0.0.1:{port}{PATH}"
            stack.enter_context(process(granian("ratelimit_proxy.wsgi:app", port), targets[name], env=env, cwd=ROOT))
        client = redis.Redis(port=redis_port)
        runs: dict[str, list[dict[str, float | str]]] = {name: [] for name in targets}
        calls: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, url in targets.items():
                before = int(client.info("commandstats").get("cmdstat_evalsha", {"calls": 0})["calls"])
                run = wrk(url, args.seconds)
                after = int(client.info("commandstats").get("cmdstat_evalsha", {"calls": 0})["calls"])
                runs[name].append(run)
                calls[name].append((after - before) / max(1, int(run["requests"])))

    print(f"wrk -t2 -c32 -d{args.seconds}s {PATH}, one client address, {args.rounds} interleaved rounds")
    print("(each target's median round)\n")
    print("| target | req/s | p50 | p99 | non-2xx share | EVALSHA calls / request |")
    print("|---|---|---|---|---|---|")
    for name in targets:
        m = median_run(runs[name])
        share = float(m["non_2xx"]) / max(1, int(m["requests"]))
        median_calls = sorted(calls[name])[len(calls[name]) // 2]
        print(f"| {name} | {float(m['rps']):.0f} | {m['p50']} | {m['p99']} | {share:.1%} | {median_calls:.4f} |")
    print()
    for label, a, b in (
        ("refused (cache on) / admitted", CACHED, ADMITTED),
        ("cache on / cache off", CACHED, UNCACHED),
    ):
        ratios = sorted(float(x["rps"]) / float(y["rps"]) for x, y in zip(runs[a], runs[b], strict=True))
        listed = ", ".join(f"{r:.2f}x" for r in ratios)
        print(f"- {label}, per round: median {ratios[len(ratios) // 2]:.2f}x (rounds: {listed})")


if __name__ == "__main__":
    main()
