"""Capacity from measured costs (issue 11, README "Scaling out"): CPU per proxied request in the proxy's
worker and in Redis, on one Redis server and on a 3-master Cluster, in one run. Needs redis-server, nginx,
wrk.

One proxy worker (granian, 1 process) in front of an nginx upstream; ``wrk -t2 -c16`` from 64 client
addresses (X-Forwarded-For from a Lua script, so the counters spread over every cluster slot); limits too
large to reach, so each request is decided by Redis and forwarded. Per request: the worker's CPU (psutil),
Redis's CPU (``used_cpu_user + used_cpu_sys`` of INFO, summed over the masters), and EVALSHA's own
``usec_per_call``. Rounds alternate the two topologies.

Run: .venv/bin/python bench/redis_capacity.py [--seconds 5 --rounds 3] (or `make bench`)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `make bench` runs bench/*.py as scripts

from bench.ratelimit_proxy import HUGE, PATH, ROOT, nginx_conf, process, wrk_arguments
from bench.wsgi_servers import free_port
from tests.redis_topologies import PASSWORD, RedisClusterServers, RedisNode

WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", nil, {["X-Forwarded-For"] = "198.51.100." .. (counter % 64 + 1)})
end
"""


def proxy(directory: Path, name: str, redis_url: str, upstream_url: str) -> tuple[list[str], dict[str, str], int]:
    port = free_port()
    tier = {"burst_per_second": HUGE, "per_minute": HUGE, "per_hour": HUGE, "ai_per_day": HUGE}
    path = directory / f"{name}.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"port": port, "workers": 1, "blocking_threads": 16},
                "upstream": {"url": upstream_url},
                "redis": {"url": redis_url},
                "limits": {"tiers": {"free": tier}},
                "clients": {"trusted_proxies": ["127.0.0.1/32"]},
                "log_proxied_requests": False,
                "logging": {"level": "WARNING"},
            }
        )
    )
    env = {**os.environ, "VIBELUX_RATELIMIT_PROXY_CONFIG": str(path), "RATELIMIT_PROXY_REDIS__PASSWORD": PASSWORD}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [
        sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", "1", "--blocking-threads", "16",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "ratelimit_proxy.wsgi:app",
    ]  # fmt: skip
    return command, env, port


def redis_cpu(nodes: list[RedisNode]) -> tuple[float, int, float]:
    """(CPU seconds, EVALSHA calls, EVALSHA µs in total) summed over ``nodes``."""
    cpu, calls, usec = 0.0, 0, 0.0
    for node in nodes:
        client = node.client()
        info = client.info("cpu")
        cpu += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        stats = client.info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
        calls, usec = calls + int(stats["calls"]), usec + float(stats["usec"])
    return cpu, calls, usec


def measure(url: str, seconds: int, worker: psutil.Process, nodes: list[RedisNode], script: Path) -> dict[str, float]:
    before_worker = sum(p.cpu_times().user + p.cpu_times().system for p in [worker, *worker.children(True)])
    before = redis_cpu(nodes)
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "-s", str(script), url], capture_output=True, text=True, check=True
    ).stdout
    after = redis_cpu(nodes)
    after_worker = sum(p.cpu_times().user + p.cpu_times().system for p in [worker, *worker.children(True)])
    requests = int(next(line.split()[0] for line in out.splitlines() if " requests in " in line))
    rps = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
    calls = max(1, after[1] - before[1])
    return {
        "rps": rps,
        "worker_us": (after_worker - before_worker) / requests * 1e6,
        "redis_us": (after[0] - before[0]) / requests * 1e6,
        "evalsha_us": (after[2] - before[2]) / calls,
        "calls_per_request": calls / requests,
    }


def main() -> None:
    args = wrk_arguments(__doc__, rounds=3)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        directory = Path(tmp)
        script = directory / "clients.lua"
        script.write_text(WRK_SCRIPT)
        upstream_port = free_port()
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        upstream_conf, _ = nginx_conf(directory, upstream_port, free_port())
        stack.enter_context(process(["nginx", "-c", str(upstream_conf), "-p", tmp], upstream_url + PATH))
        single = RedisNode()
        single.start()
        stack.callback(single.close)
        cluster = RedisClusterServers()
        cluster.start()
        stack.callback(cluster.close)
        topologies = {
            "one Redis server": (f"redis://127.0.0.1:{single.port}/0", [single]),
            "Redis Cluster, 3 masters": (cluster.url, cluster.masters()),
        }
        targets = {}
        for name, (url, nodes) in topologies.items():
            command, env, port = proxy(directory, f"proxy-{len(targets)}", url, upstream_url)
            proc = stack.enter_context(process(command, f"http://127.0.0.1:{port}{PATH}", env=env, cwd=ROOT))
            targets[name] = (f"http://127.0.0.1:{port}{PATH}", psutil.Process(proc.pid), nodes)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (url, worker, nodes) in targets.items():
                runs[name].append(measure(url, args.seconds, worker, nodes, script))

    print(f"wrk -t2 -c16 -d{args.seconds}s, 64 client addresses, one proxy worker, {args.rounds} alternating rounds")
    print("(median round of each; CPU per proxied request)\n")
    print("| Redis | req/s (1 worker) | worker CPU µs | Redis CPU µs (all masters) | EVALSHA µs | calls / request |")
    print("|---|---|---|---|---|---|")
    for name, rows in runs.items():
        m = sorted(rows, key=lambda r: r["rps"])[len(rows) // 2]
        print(
            f"| {name} | {m['rps']:.0f} | {m['worker_us']:.0f} | {m['redis_us']:.1f} | {m['evalsha_us']:.1f} | "
            f"{m['calls_per_request']:.2f} |"
        )
    single_rows, cluster_rows = runs["one Redis server"], runs["Redis Cluster, 3 masters"]
    ratios = sorted(c["rps"] / s["rps"] for s, c in zip(single_rows, cluster_rows, strict=True))
    print(f"\n- cluster / one server, req/s per round: {', '.join(f'{r:.2f}x' for r in ratios)}")


if __name__ == "__main__":
    main()
