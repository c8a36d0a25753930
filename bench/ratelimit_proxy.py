"""Rate-limiting proxy, measured against peers in one run (issue 3). Needs redis-server, nginx, wrk.

1. wrk -t2 -c32 through: the upstream direct (nginx serving a small JSON); this proxy (granian x2, Redis);
   a naive peer (Flask + Flask-Limiter, sliding-window counter on the same Redis, `requests` per call, the
   same granian x2); nginx as a proxy with `limit_req`. Limits are set high so every request is admitted
   and forwarded: the cost measured is the limiter's plus the forwarding.
2. Limiter decisions per second in one thread for burst + minute + hour + AI-day: this proxy's one Lua
   call against `limits`' sliding-window counter (one call per limit) on the same Redis.
3. Redis commands per proxied request, from MONITOR during 200 sequential requests per target (rather than
   INFO commandstats, which cannot tell the proxy's commands from the peer's on the shared Redis, nor the
   commands run inside a script from those sent by a client).

Run: .venv/bin/python bench/ratelimit_proxy.py [--seconds 5 --rounds 5] (or `make bench`)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `make bench` runs bench/*.py as scripts

from bench.wsgi_servers import free_port, wait_ready
from service_kit.tiers import TIERS

ROOT = Path(__file__).resolve().parents[1]
HUGE = 10_000_000
PATH = "/api/v1/users"
UPSTREAM = "upstream direct (nginx)"
OURS = "this proxy (granian x2, Redis)"
PEER = "naive peer: Flask-Limiter + requests (granian x2)"
NGINX = "nginx proxy with limit_req (x2 workers)"
BODY = '{"users":[{"id":1,"name":"user-1"},{"id":2,"name":"user-2"},{"id":3,"name":"user-3"}]}'

NAIVE_PEER = f"""
import os
import requests
from flask import Flask, Response, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

UPSTREAM = os.environ["BENCH_UPSTREAM"]
app = Flask(__name__)
limiter = Limiter(
    get_remote_address,
    app=app,
    storage_uri=os.environ["BENCH_REDIS"],
    strategy="sliding-window-counter",
    default_limits=["{HUGE}/second", "{HUGE}/minute", "{HUGE}/hour"],
)
HOP = {{"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"}}

@app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def proxy(path):
    upstream = requests.request(
        request.method, f"{{UPSTREAM}}/{{path}}", params=request.args, data=request.get_data(),
        headers={{k: v for k, v in request.headers if k.lower() != "host"}}, timeout=10,
    )
    headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP]
    return Response(upstream.content, upstream.status_code, headers)
"""


def nginx_conf(directory: Path, upstream_port: int, proxy_port: int) -> tuple[Path, Path]:
    common = f"daemon off; pid {{pid}}; error_log {directory}/error.log warn;\n"
    upstream = directory / "upstream.conf"
    upstream.write_text(
        common.format(pid=directory / "upstream.pid")
        + "worker_processes 1; events { worker_connections 4096; }\n"
        + f"http {{ access_log off; server {{ listen 127.0.0.1:{upstream_port};\n"
        + f"  location / {{ default_type application/json; return 200 '{BODY}'; }} }} }}\n"
    )
    proxy = directory / "proxy.conf"
    proxy.write_text(
        common.format(pid=directory / "proxy.pid")
        + "worker_processes 2; events { worker_connections 4096; }\n"
        + "http { access_log off;\n"
        + "  limit_req_zone $binary_remote_addr zone=perip:10m rate=1000000r/s;\n"
        + f"  upstream api {{ server 127.0.0.1:{upstream_port}; keepalive 32; }}\n"
        + f"  server {{ listen 127.0.0.1:{proxy_port}; location / {{\n"
        + "    limit_req zone=perip burst=1000000 nodelay;\n"
        + '    proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection ""; } } }\n'
    )
    return upstream, proxy


@contextmanager
def process(command: list[str], ready_url: str | None, **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    quiet = subprocess.DEVNULL
    proc = subprocess.Popen(command, stdout=quiet, stderr=quiet, **kwargs)  # type: ignore[call-overload]
    try:
        if ready_url:
            wait_ready(ready_url)
        yield proc
    finally:
        proc.terminate()
        proc.wait(15)


def wrk(url: str, seconds: int, headers: tuple[str, ...] = ()) -> dict[str, float | str]:
    """``headers``: ``"Name: value"`` lines every request sends."""
    options = [item for header in headers for item in ("-H", header)]
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", *options, url], capture_output=True, text=True, check=True
    ).stdout

    def grab(pattern: str) -> str:
        match = re.search(pattern, out, re.MULTILINE)
        return match.group(1) if match else "?"

    non_2xx = int(grab(r"Non-2xx or 3xx responses:\s+(\d+)")) if "Non-2xx" in out else 0
    return {
        "rps": float(grab(r"Requests/sec:\s+([\d.]+)")),
        "requests": int(grab(r"(\d+) requests in")),
        "p50": grab(r"^\s+50%\s+(\S+)"),
        "p99": grab(r"^\s+99%\s+(\S+)"),
        "non_2xx": non_2xx,
    }


def redis_commands_per_request(client: redis.Redis, url: str, requests_sent: int = 200) -> tuple[float, float]:
    """Send requests one by one while MONITOR watches Redis: (commands sent by the service, commands run
    inside Lua scripts) per request. Background work (the fallback ban poll) is counted too; the PINGs
    with which the change listeners check their connection once a second are not."""
    seen: list[str] = []
    done = threading.Event()

    def watch(ready: threading.Event) -> None:
        with client.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                if command["command"].upper().startswith("ECHO BENCH-END"):
                    break
                if command["command"].upper() != "PING":  # the change listeners' health checks, 1/s
                    seen.append("lua" if command.get("client_type") == "lua" else "client")
        done.set()

    ready = threading.Event()
    threading.Thread(target=watch, args=(ready,), daemon=True).start()
    ready.wait(5)
    with requests.Session() as session:
        for _ in range(requests_sent):
            session.get(url, timeout=5)
    client.echo("bench-end")
    done.wait(10)
    return seen.count("client") / requests_sent, seen.count("lua") / requests_sent


def proxy_config(directory: Path, redis_url: str, upstream_url: str, port: int) -> Path:
    path = directory / "proxy.yml"
    tier = {"burst_per_second": HUGE, "per_minute": HUGE, "per_hour": HUGE, "ai_per_day": HUGE}
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"port": port, "workers": 2, "blocking_threads": 16},
                "upstream": {"url": upstream_url},
                "redis": {"url": redis_url},
                "limits": {"tiers": dict.fromkeys(TIERS, tier)},
                "log_proxied_requests": False,
                "logging": {"level": "WARNING"},
            }
        )
    )
    return path


def granian(target: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", "2", "--blocking-threads", "16",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", target,
    ]  # fmt: skip


def decisions_per_second(redis_url: str, seconds: float) -> list[tuple[str, float]]:
    """One thread, one client, fresh keys: burst + minute + hour + AI-day for every decision."""
    from limits import RateLimitItemPerDay, RateLimitItemPerHour, RateLimitItemPerMinute, RateLimitItemPerSecond
    from limits.storage import RedisStorage
    from limits.strategies import SlidingWindowCounterRateLimiter

    from ratelimit_proxy.limiter import Limit
    from ratelimit_proxy.limiter_storage import MemoryLimiter, RedisLimiter

    ours = [Limit("burst", HUGE, 1), Limit("minute", HUGE, 60), Limit("hour", HUGE, 3600)]
    ours.append(Limit("ai-day", HUGE, 86400))
    items = [RateLimitItemPerSecond(HUGE), RateLimitItemPerMinute(HUGE), RateLimitItemPerHour(HUGE)]
    items.append(RateLimitItemPerDay(HUGE))
    peer = SlidingWindowCounterRateLimiter(RedisStorage(redis_url))

    redis_limiter = RedisLimiter(redis.Redis.from_url(redis_url))
    memory_limiter = MemoryLimiter()
    contenders: list[tuple[str, Callable[[], object]]] = [
        ("this proxy, Redis (1 Lua call, all-or-nothing)", lambda: redis_limiter.hit("bench", ours)),
        ("limits sliding-window-counter, Redis (4 calls)", lambda: [peer.hit(i, "bench") for i in items]),
        ("this proxy, memory backend", lambda: memory_limiter.hit("bench", ours)),
    ]
    counts = dict.fromkeys((name for name, _ in contenders), 0)
    slice_seconds = seconds / 6
    for _ in range(6):  # interleaved slices: load changes on the machine hit every contender alike
        for name, decide in contenders:
            deadline = time.perf_counter() + slice_seconds
            while time.perf_counter() < deadline:
                decide()
                counts[name] += 1
    return [(name, count / seconds) for name, count in counts.items()]


def median_run(runs: list[dict[str, float | str]]) -> dict[str, float | str]:
    return sorted(runs, key=lambda r: float(r["rps"]))[len(runs) // 2]


def wrk_arguments(description: str | None, rounds: int = 5) -> argparse.Namespace:
    """``--seconds`` and ``--rounds`` of the wrk benches; exits naming a missing tool."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=rounds, help="rounds; each runs every target once, in turn")
    args = parser.parse_args()
    for tool in ("redis-server", "nginx", "wrk"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (BENCH=1 scripts/system-deps.sh installs it)")
    return args


def main() -> None:
    args = wrk_arguments(__doc__)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        directory = Path(tmp)
        redis_port, upstream_port, nginx_proxy_port = free_port(), free_port(), free_port()
        proxy_port, peer_port = free_port(), free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        upstream_conf, nginx_proxy_conf = nginx_conf(directory, upstream_port, nginx_proxy_port)
        Path(tmp, "naive_peer.py").write_text(NAIVE_PEER)
        config = proxy_config(directory, redis_url, upstream_url, proxy_port)
        env = {**os.environ, "VIBELUX_RATELIMIT_PROXY_CONFIG": str(config)}
        # As `serve` runs it: two workers share their metrics through prometheus-client's multiprocess files.
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory / "metrics")
        (directory / "metrics").mkdir()
        peer_env = {**os.environ, "BENCH_UPSTREAM": upstream_url, "BENCH_REDIS": redis_url}
        stack.enter_context(
            process(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"], None)
        )
        stack.enter_context(process(["nginx", "-c", str(upstream_conf), "-p", tmp], upstream_url + PATH))
        targets = {
            UPSTREAM: upstream_url + PATH,
            OURS: f"http://127.0.0.1:{proxy_port}{PATH}",
            PEER: f"http://127.0.0.1:{peer_port}{PATH}",
            NGINX: f"http://127.0.0.1:{nginx_proxy_port}{PATH}",
        }
        stack.enter_context(process(granian("ratelimit_proxy.wsgi:app", proxy_port), targets[OURS], env=env, cwd=ROOT))
        stack.enter_context(process(granian("naive_peer:app", peer_port), targets[PEER], env=peer_env, cwd=tmp))
        stack.enter_context(process(["nginx", "-c", str(nginx_proxy_conf), "-p", tmp], targets[NGINX]))
        client = redis.Redis(port=redis_port, decode_responses=True)
        # Rounds interleave the targets, so a change in the machine's load hits all of them alike.
        runs: dict[str, list[dict[str, float | str]]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, url in targets.items():
                runs[name].append(wrk(url, args.seconds))
        calls = {name: redis_commands_per_request(client, url) for name, url in targets.items()}
        decisions = decisions_per_second(redis_url, 6.0)

    def ratios(name: str, other: str) -> list[float]:
        return sorted(float(a["rps"]) / float(b["rps"]) for a, b in zip(runs[name], runs[other], strict=True))

    print(
        f"wrk -t2 -c32 -d{args.seconds}s {PATH}, {args.rounds} interleaved rounds; every request admitted and forwarded"
    )
    print("(req/s, p50, p99 of each target's median round)\n")
    print("| target | req/s | p50 | p99 | non-2xx (all rounds) | Redis calls / request | run inside Lua / request |")
    print("|---|---|---|---|---|---|---|")
    for name in targets:
        m = median_run(runs[name])
        errors = sum(int(r["non_2xx"]) for r in runs[name])
        client_calls, lua_calls = calls[name]
        cells = [name, f"{float(m['rps']):.0f}", m["p50"], m["p99"], errors, f"{client_calls:.2f}", f"{lua_calls:.2f}"]
        print("| " + " | ".join(map(str, cells)) + " |")
    print()
    for label, other, goal in (("naive peer", PEER, "goal >= 3x"), ("nginx limit_req", NGINX, "goal >= 10%")):
        r = ratios(OURS, other)
        fmt = "{:.0%}" if other == NGINX else "{:.2f}x"
        listed = ", ".join(fmt.format(x) for x in r)
        print(f"- this proxy / {label}, per round: median {fmt.format(r[len(r) // 2])} (rounds: {listed}; {goal})")
    print()
    print("| limiter, one thread, burst + minute + hour + AI-day | decisions/s |")
    print("|---|---|")
    for name, rate in decisions:
        print(f"| {name} | {rate:.0f} |")
    print(f"\n- ratio Lua script / limits: {decisions[0][1] / decisions[1][1]:.2f}x")


if __name__ == "__main__":
    main()
