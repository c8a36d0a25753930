"""Where the proxy's CPU goes, part by part, each against the library it replaced. Needs redis-server, nginx.

In one process and one thread, against a real Redis and an nginx upstream serving a small JSON: CPU time
(`time.process_time`) per call of
- an upstream GET: urllib3 pool, `http.client` on one kept-alive connection, and this proxy's client
  (ratelimit_proxy/forward.py: pooled sockets, llhttp);
- the limiter's decision for burst + minute + hour: redis-py's `Script` call, and RedisLimiter's own RESP
  EVALSHA (same script, same keys);
- a whole proxied request through the gateway (`app.wsgi_app`: checks, limiter, forwarding, headers, metrics).

Run: .venv/bin/python -m bench.ratelimit_parts [--calls 3000] (or `make bench`)
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

import redis
import urllib3

from bench.ratelimit_proxy import HUGE, PATH, nginx_conf, process
from bench.wsgi_servers import free_port
from ratelimit_proxy.app import create_app
from ratelimit_proxy.forward import Upstream
from ratelimit_proxy.limiter import Limit
from ratelimit_proxy.limiter_storage import RedisLimiter, counter_key
from ratelimit_proxy.settings import LimitSettings, ProxySettings, RedisSettings, TierSettings, UpstreamSettings
from service_kit.settings import LoggingSettings
from service_kit.tiers import TIERS

HEADERS = {"Host": "api.example", "User-Agent": "wrk", "Accept": "application/json"}


def cpu_per_call(call: Callable[[], object], calls: int) -> float:
    """Microseconds of this process's CPU per call, after a warm-up."""
    for _ in range(calls // 10):
        call()
    started = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - started) / calls * 1e6


def upstream_clients(port: int) -> list[tuple[str, Callable[[], object]]]:
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1)

    def with_urllib3() -> bytes:
        response = pool.urlopen("GET", PATH, headers=HEADERS, preload_content=False, retries=False)
        body = response.read()
        response.release_conn()
        return body

    connection = http.client.HTTPConnection("127.0.0.1", port)

    def with_http_client() -> bytes:
        connection.request("GET", PATH, headers=HEADERS)
        return connection.getresponse().read()

    ours = Upstream(UpstreamSettings(url=f"http://127.0.0.1:{port}"))

    def with_ours() -> object:
        return ours.send("GET", PATH, list(HEADERS.items()), None).body

    return [
        ("upstream GET: urllib3", with_urllib3),
        ("upstream GET: http.client", with_http_client),
        ("upstream GET: this proxy's client (llhttp)", with_ours),
    ]


def limiter_calls(redis_url: str) -> list[tuple[str, Callable[[], object]]]:
    limits = [Limit("burst", HUGE, 1), Limit("minute", HUGE, 60), Limit("hour", HUGE, 3600)]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    script = client.register_script(resources.files("ratelimit_proxy").joinpath("ratelimit.lua").read_text())
    keys = [counter_key("bench", lim) for lim in limits]
    args = [-1, 1, *[n for lim in limits for n in (lim.quota, lim.window_ms, lim.buckets)], 1, 0]  # no lease
    ours = RedisLimiter(client)
    return [
        ("limiter decision: redis-py Script call", lambda: script(keys=keys, args=args)),
        ("limiter decision: RedisLimiter (RESP EVALSHA, reply decoded)", lambda: ours.hit("bench", limits)),
    ]


def gateway_call(redis_url: str, upstream_url: str) -> Callable[[], object]:
    tier = TierSettings(burst_per_second=HUGE, per_minute=HUGE, per_hour=HUGE, ai_per_day=HUGE)
    settings = ProxySettings(
        logging=LoggingSettings(level="WARNING"),
        upstream=UpstreamSettings(url=upstream_url),
        redis=RedisSettings(url=redis_url),
        limits=LimitSettings(tiers=dict.fromkeys(TIERS, tier)),
        log_proxied_requests=False,
    )
    app = create_app(settings)
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": PATH, "QUERY_STRING": "", "RAW_URI": PATH, "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
        **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in HEADERS.items()},
    }  # fmt: skip

    def proxied_request() -> None:
        statuses: list[str] = []
        for _ in app.wsgi_app(dict(environ), lambda status, headers, exc_info=None: statuses.append(status)):
            pass
        assert statuses[0].startswith("200"), statuses

    return proxied_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000, help="timed calls per part")
    args = parser.parse_args()
    for tool in ("redis-server", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (BENCH=1 scripts/system-deps.sh installs it)")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        redis_port, upstream_port = free_port(), free_port()
        redis_url, upstream_url = f"redis://127.0.0.1:{redis_port}/0", f"http://127.0.0.1:{upstream_port}"
        upstream_conf, _ = nginx_conf(Path(tmp), upstream_port, free_port())
        stack.enter_context(
            process(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"], None)
        )
        stack.enter_context(process(["nginx", "-c", str(upstream_conf), "-p", tmp], upstream_url + PATH))
        parts = upstream_clients(upstream_port) + limiter_calls(redis_url)
        parts.append(("whole proxied request through the gateway", gateway_call(redis_url, upstream_url)))
        print(f"CPU per call, one thread, {args.calls} calls each\n")
        print("| part | µs CPU per call |")
        print("|---|---|")
        for name, call in parts:
            print(f"| {name} | {cpu_per_call(call, args.calls):.0f} |")


if __name__ == "__main__":
    main()
