"""The proxy's throughput with the usage rollups on and off, in one run (issue 15; goal: at most 3% lower).
Needs redis-server, nginx, wrk.

1. Two proxies of the same build (granian x2 each, one Redis, one nginx upstream), the same config but for
   ``usage.database_url`` (a SQLite platform database, the default flush every 10 s): wrk -t2 -c32 with an
   API key against each in turn, the order alternating per round (off, on, then on, off, ...) so neither
   always runs first after a pause. The ratio on/off is taken per round. Afterwards the calls in the table
   are compared with the requests wrk completed against the proxy with rollups: every one is there.
2. CPU of the rollups' own work in one thread (``time.process_time``): ``record`` per call (the request
   path's share), and a flush per row written (the writer thread's, off the request path but on the same
   cores and GIL).

Run: .venv/bin/python bench/ratelimit_usage.py [--seconds 5 --rounds 10]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import sqlalchemy
import yaml
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `make bench` runs bench/*.py as scripts

from bench.ratelimit_proxy import HUGE, PATH, ROOT, granian, median_run, nginx_conf, process, wrk, wrk_arguments
from bench.wsgi_servers import free_port
from exporters.business.schema import api_usage_rollups
from ratelimit_proxy.metrics import ProxyMetrics
from ratelimit_proxy.settings import UsageSettings
from ratelimit_proxy.usage import RouteTemplates, UsageRollups
from service_kit.requests import hash_token
from service_kit.tiers import TIERS

KEY = "vbx_bench_usage_key"
OFF, ON = "rollups off", "rollups on (SQLite, flush every 10 s)"


def config(directory: Path, name: str, redis_url: str, upstream_url: str, port: int) -> Path:
    """The bench's proxy config: limits never reached, one static key."""
    path = directory / f"{name}.yml"
    tier = {"burst_per_second": HUGE, "per_minute": HUGE, "per_hour": HUGE, "ai_per_day": HUGE}
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"port": port, "workers": 2, "blocking_threads": 16},
                "upstream": {"url": upstream_url},
                "redis": {"url": redis_url},
                "limits": {"tiers": dict.fromkeys(TIERS, tier)},
                "usage": {"routes": ["/api/v1/*"]},
                "static_keys": [{"sha256": hash_token(KEY), "tier": "startup", "owner": "bench"}],
                "log_proxied_requests": False,
                "logging": {"level": "WARNING"},
            }
        )
    )
    return path


def rollup_cpu(directory: Path, calls: int = 200_000, rows: int = 5_000) -> tuple[float, float]:
    """(µs of CPU per ``record``, µs per row of a flush to SQLite), in this one thread."""
    url = f"sqlite:///{directory / 'cpu.sqlite3'}"
    usage = UsageRollups(
        UsageSettings(database_url=url), RouteTemplates(["/api/v1/*"]), ProxyMetrics(CollectorRegistry())
    )
    key_id = hash_token(KEY)
    usage.record(key_id, "startup", "bench", PATH, 200, 3.2, False)
    usage.flush()  # the table exists
    started = time.process_time()
    for _ in range(calls):
        usage.record(key_id, "startup", "bench", PATH, 200, 3.2, False)
    per_call = (time.process_time() - started) / calls * 1e6
    usage.flush()
    for i in range(rows):
        usage.record(f"key-{i}", "startup", "bench", PATH, 200, 3.2, False)
    started = time.process_time()
    usage.flush()
    per_row = (time.process_time() - started) / rows * 1e6
    usage.close()
    return per_call, per_row


def recorded_calls(url: str) -> int:
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        total = connection.execute(sqlalchemy.select(sqlalchemy.func.sum(api_usage_rollups.c.calls))).scalar()
    engine.dispose()
    return int(total or 0)


def main() -> None:
    args = wrk_arguments(__doc__, rounds=10)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        directory = Path(tmp)
        redis_port, upstream_port, unused_port = free_port(), free_port(), free_port()
        redis_url, upstream_url = f"redis://127.0.0.1:{redis_port}/0", f"http://127.0.0.1:{upstream_port}"
        upstream_conf, _ = nginx_conf(directory, upstream_port, unused_port)
        stack.enter_context(
            process(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"], None)
        )
        stack.enter_context(process(["nginx", "-c", str(upstream_conf), "-p", tmp], upstream_url + PATH))
        platform = f"sqlite:///{directory / 'platform.sqlite3'}"
        urls = {}
        with ExitStack() as proxies:
            for name, database in ((OFF, ""), (ON, platform)):
                port = free_port()
                label = "on" if database else "off"
                env = {
                    **os.environ,
                    "VIBELUX_RATELIMIT_PROXY_CONFIG": str(config(directory, label, redis_url, upstream_url, port)),
                }
                env["PROMETHEUS_MULTIPROC_DIR"] = str(directory / f"metrics-{label}")  # as `serve` runs it
                (directory / f"metrics-{label}").mkdir()
                if database:
                    env["RATELIMIT_PROXY_USAGE__DATABASE_URL"] = database
                urls[name] = f"http://127.0.0.1:{port}{PATH}"
                proxies.enter_context(process(granian("ratelimit_proxy.wsgi:app", port), urls[name], env=env, cwd=ROOT))
            runs: dict[str, list[dict[str, float | str]]] = {OFF: [], ON: []}
            headers = (f"Authorization: Bearer {KEY}",)
            for index in range(args.rounds):
                for name in (OFF, ON) if index % 2 == 0 else (ON, OFF):
                    runs[name].append(wrk(urls[name], args.seconds, headers))
        # The proxies have stopped: each worker flushed what it held.
        served = sum(int(run["requests"]) for run in runs[ON])
        recorded = recorded_calls(platform)
        per_call, per_row = rollup_cpu(directory)

    ratios = [float(on["rps"]) / float(off["rps"]) for on, off in zip(runs[ON], runs[OFF], strict=True)]
    print(f"wrk -t2 -c32 -d{args.seconds}s {PATH} with an API key, {args.rounds} rounds, order alternating per round")
    print("(req/s, p50, p99 of each target's median round)\n")
    print("| target | req/s | p50 | p99 | non-2xx (all rounds) |")
    print("|---|---|---|---|---|")
    for name in (OFF, ON):
        m = median_run(runs[name])
        errors = sum(int(r["non_2xx"]) for r in runs[name])
        print(f"| {name} | {float(m['rps']):.0f} | {m['p50']} | {m['p99']} | {errors} |")
    listed = ", ".join(f"{r:.3f}" for r in ratios)
    print(f"\n- on / off per round: median {statistics.median(ratios):.3f} (rounds: {listed}; goal >= 0.970)")
    print(
        f"- mean of the rounds {statistics.mean(ratios):.3f}, sorted: {', '.join(f'{r:.3f}' for r in sorted(ratios))}"
    )
    print(f"- calls in api_usage_rollups {recorded} / requests wrk completed {served} (plus the readiness probe)")
    print(f"- CPU in one thread: record {per_call:.2f} µs per call; flush to SQLite {per_row:.1f} µs per row")


if __name__ == "__main__":
    main()
