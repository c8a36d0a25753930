"""The proxy's throughput with the usage rollups on and off, in one run (issue 15; goal: at most 3% lower).
Needs redis-server, nginx, wrk.

1. Two proxies of the same build (granian x2 each, one Redis, one nginx upstream), the same config but for
   ``usage.database_url`` (a SQLite platform database, the default flush every 10 s): wrk -t2 -c32 with an
   API key against each in turn, the order alternating per round (off, on, then on, off, ...) so neither
   always runs first after a pause. Per round: the ratio on/off of requests per second, and of CPU per
   request (user + system time of the proxy's granian processes, psutil, over the wrk run). On a machine
   shared with other work the req/s of back-to-back runs differ by more than the 3% looked for; the CPU
   each request costs the proxy moves much less, and on saturated cores throughput is its inverse.
   Afterwards the calls in the table are compared with the requests wrk completed against the proxy with
   rollups: every one is there.
2. CPU per proxied request in one process (``time.process_time``, which counts the writer thread too):
   the gateway called directly as in bench/ratelimit_parts.py, real Redis and nginx, one app whose
   rollups are switched off and on in alternating slices. One process, no server scheduling, the same
   connections on both sides: the steadiest of the three figures.
3. CPU of the rollups' own work in one thread: ``record`` per call (the request path's share), and a
   flush per row written (the writer thread's, off the request path but on the same cores and GIL).

Run: .venv/bin/python bench/ratelimit_usage.py [--seconds 5 --rounds 10]
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import psutil
import sqlalchemy
import yaml
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `make bench` runs bench/*.py as scripts

from bench.ratelimit_proxy import HUGE, PATH, ROOT, granian, median_run, nginx_conf, process, wrk, wrk_arguments
from bench.wsgi_servers import free_port
from exporters.business.schema import api_usage_rollups
from ratelimit_proxy.app import create_app
from ratelimit_proxy.metrics import ProxyMetrics
from ratelimit_proxy.runtime import Runtime
from ratelimit_proxy.settings import (
    LimitSettings,
    ProxySettings,
    RedisSettings,
    StaticKey,
    TierSettings,
    UpstreamSettings,
    UsageSettings,
)
from ratelimit_proxy.usage import RouteTemplates, UsageRollups
from service_kit.requests import hash_token
from service_kit.settings import LoggingSettings
from service_kit.tiers import TIERS

KEY = "vbx_bench_usage_key"
OFF, ON = "rollups off", "rollups on (SQLite, flush every 10 s)"
GATEWAY_CALLS = 500  # requests per slice of the in-process part


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
    sqlite3.connect(directory / "cpu.sqlite3").close()
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


def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its children (granian and its workers)."""
    parent = psutil.Process(pid)
    total = 0.0
    for proc in [parent, *parent.children(recursive=True)]:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def measured(url: str, pid: int, seconds: int, headers: tuple[str, ...]) -> dict[str, float | str]:
    """One wrk run, with the proxy's CPU per request (µs) added."""
    before = process_tree_cpu(pid)
    run = wrk(url, seconds, headers)
    run["cpu_us"] = (process_tree_cpu(pid) - before) / max(1, int(run["requests"])) * 1e6
    return run


def gateway(redis_url: str, upstream_url: str, usage_url: str) -> tuple[Callable[[], None], Runtime]:
    """A proxied request through the gateway (``app.wsgi_app``) with the bench's key, and its runtime."""
    tier = TierSettings(burst_per_second=HUGE, per_minute=HUGE, per_hour=HUGE, ai_per_day=HUGE)
    settings = ProxySettings(
        logging=LoggingSettings(level="WARNING"),
        upstream=UpstreamSettings(url=upstream_url),
        redis=RedisSettings(url=redis_url),
        limits=LimitSettings(tiers=dict.fromkeys(TIERS, tier)),
        static_keys=[StaticKey(sha256=hash_token(KEY), tier="startup", owner="bench")],
        usage=UsageSettings(database_url=usage_url, routes=["/api/v1/*"]),
        log_proxied_requests=False,
    )
    app = create_app(settings, registry=CollectorRegistry())
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": PATH, "QUERY_STRING": "", "RAW_URI": PATH, "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
        "HTTP_HOST": "api.example", "HTTP_ACCEPT": "application/json", "HTTP_AUTHORIZATION": f"Bearer {KEY}",
    }  # fmt: skip

    def proxied_request() -> None:
        statuses: list[str] = []
        for _ in app.wsgi_app(dict(environ), lambda status, headers, exc_info=None: statuses.append(status)):
            pass
        assert statuses[0].startswith("200"), statuses

    return proxied_request, app.extensions["ratelimit_proxy"]


def gateway_cpu(
    redis_url: str, upstream_url: str, usage_url: str, slices: int = 60, calls: int = GATEWAY_CALLS
) -> dict[str, list[float]]:
    """CPU seconds of each slice of ``calls`` requests with rollups off and on (order alternating). One
    app whose rollups are switched off (``runtime.usage = None``) and on between slices: the same
    connections, caches and threads on both sides, so only the recording differs."""
    call, runtime = gateway(redis_url, upstream_url, usage_url)
    rollups = runtime.usage
    for _ in range(calls):
        call()  # warm: connections, caches, the table
    spent: dict[str, list[float]] = {"off": [], "on": []}
    for index in range(slices):
        for name in ("off", "on") if index % 2 == 0 else ("on", "off"):
            runtime.usage = rollups if name == "on" else None
            started = time.process_time()
            for _ in range(calls):
                call()
            spent[name].append(time.process_time() - started)
    runtime.usage = rollups
    runtime.close()
    return spent


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
        sqlite3.connect(
            directory / "platform.sqlite3"
        ).close()  # the platform database exists; the proxy adds its table
        platform = f"sqlite:///{directory / 'platform.sqlite3'}"
        urls, pids = {}, {}
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
                command = granian("ratelimit_proxy.wsgi:app", port)
                pids[name] = proxies.enter_context(process(command, urls[name], env=env, cwd=ROOT)).pid
            runs: dict[str, list[dict[str, float | str]]] = {OFF: [], ON: []}
            headers = (f"Authorization: Bearer {KEY}",)
            for index in range(args.rounds):
                for name in (OFF, ON) if index % 2 == 0 else (ON, OFF):
                    runs[name].append(measured(urls[name], pids[name], args.seconds, headers))
        # The proxies have stopped: each worker flushed what it held.
        served = sum(int(run["requests"]) for run in runs[ON])
        recorded = recorded_calls(platform)
        sqlite3.connect(directory / "gateway.sqlite3").close()
        gateway_url = f"sqlite:///{directory / 'gateway.sqlite3'}"
        in_process = gateway_cpu(redis_url, upstream_url, gateway_url)
        per_call, per_row = rollup_cpu(directory)

    ratios = [float(on["rps"]) / float(off["rps"]) for on, off in zip(runs[ON], runs[OFF], strict=True)]
    cpu = [float(on["cpu_us"]) / float(off["cpu_us"]) for on, off in zip(runs[ON], runs[OFF], strict=True)]
    print(f"wrk -t2 -c32 -d{args.seconds}s {PATH} with an API key, {args.rounds} rounds, order alternating per round")
    print("(req/s, p50, p99 of each target's median round; CPU: the proxy's processes per request, median round)\n")
    print("| target | req/s | p50 | p99 | proxy CPU µs / request | non-2xx (all rounds) |")
    print("|---|---|---|---|---|---|")
    for name in (OFF, ON):
        m = median_run(runs[name])
        errors = sum(int(r["non_2xx"]) for r in runs[name])
        cpu_us = statistics.median(float(r["cpu_us"]) for r in runs[name])
        print(f"| {name} | {float(m['rps']):.0f} | {m['p50']} | {m['p99']} | {cpu_us:.1f} | {errors} |")
    for label, values, goal in (("req/s", ratios, "goal >= 0.970"), ("CPU per request", cpu, "goal <= 1.031")):
        listed = ", ".join(f"{r:.3f}" for r in values)
        print(f"\n- {label}, on / off per round: median {statistics.median(values):.3f} ({goal}; rounds: {listed})")
    pairs = [on / off for on, off in zip(in_process["on"], in_process["off"], strict=True)]
    low, middle, high = statistics.quantiles(pairs, n=4)
    print(f"- CPU per request in one process (gateway called directly), on / off over {len(pairs)} pairs of")
    print(f"  slices: median {middle:.3f}, quartiles {low:.3f} and {high:.3f}")
    # Interference from other work only adds time: each side's quickest slice is the closest to its cost.
    best = {name: min(values) / GATEWAY_CALLS * 1e6 for name, values in in_process.items()}
    ratio = best["on"] / best["off"]
    print(f"- quickest slice of each: off {best['off']:.0f} µs, on {best['on']:.0f} µs per request, ratio {ratio:.3f}")
    fastest = {name: max(float(r["rps"]) for r in runs[name]) for name in (OFF, ON)}
    ratio = fastest[ON] / fastest[OFF]
    print(f"- fastest wrk round of each: off {fastest[OFF]:.0f}, on {fastest[ON]:.0f} req/s, ratio {ratio:.3f}")
    print(f"- calls in api_usage_rollups {recorded}; requests wrk completed {served} (it leaves out those in flight")
    print("  when a run ends, and the readiness probe)")
    print(f"- CPU in one thread: record {per_call:.2f} µs per call; flush to SQLite {per_row:.1f} µs per row")


if __name__ == "__main__":
    main()
