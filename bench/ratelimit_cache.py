"""The proxy's response cache, measured against peers in one run (issue 16). Needs redis-server, nginx, wrk.

1. wrk -t2 -c32 against, in interleaved rounds (the order rotating each round):
   - the proxy with the cache off, GET of an uncacheable path (the plain proxied path);
   - the proxy with the cache on, the same uncacheable GET (the first answer refused for storage, then
     hit-for-pass: the cache's overhead on traffic it cannot serve);
   - the proxy with the cache on, GET of a cacheable path (``Cache-Control: public, max-age=3600``): hits,
     from the worker's local layer;
   - nginx ``proxy_cache`` (2 workers, ``proxy_cache_lock on``) on the same upstream and path;
   - nginx upstream only: the same hits with the limiter in process memory (no ``redis.url``: each worker
     its own counters and cache), not a configuration to ship: the ceiling a hit would have without the
     limiter's Redis round trip, which it keeps so that hits count against limits;
   - nginx upstream only: the same hits with leases off (``limits.lease_requests: 1``): one Redis call per
     request, as before leases (ratelimit_proxy/leases.py).
   Both proxies run as ``serve`` runs them (granian x2, prometheus-client multiprocess files, one Redis);
   limits are set so every request is admitted. Two upstreams, each measured in the same rounds:
   nginx serving a fixed JSON (an origin that costs nothing, the cache's worst case), and the demo API
   (demo/upstream.py, Flask under granian with one worker: an origin doing some work per request; its
   catalog says ``public, max-age=60``).
2. CPU per request in one process (``time.process_time``), the gateway called directly, real Redis and the
   nginx upstream, in alternating slices: cache off, miss (uncacheable), hit from the local layer, hit from
   Redis (local layer off), a hit with leases off, and a hit with the limiter in memory: what a hit costs
   against what a miss costs, and how much of a hit is the limiter's Redis call.

Run: .venv/bin/python bench/ratelimit_cache.py [--seconds 5 --rounds 5]
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `make bench` runs bench/*.py as scripts

from bench.ratelimit_proxy import BODY, HUGE, ROOT, granian, median_run, process, wrk, wrk_arguments
from bench.wsgi_servers import free_port
from ratelimit_proxy.app import create_app
from ratelimit_proxy.settings import (
    CacheRouteSettings,
    CacheSettings,
    LimitSettings,
    ProxySettings,
    RedisSettings,
    TierSettings,
    UpstreamSettings,
)
from service_kit.settings import LoggingSettings
from service_kit.tiers import TIERS

UNCACHED, CACHED = "/api/v1/users", "/api/v1/catalog"
OFF = "proxy, cache off (uncacheable GET)"
MISS = "proxy, cache on, uncacheable GET (pass)"
HIT = "proxy, cache on, cacheable GET (hit)"
NGINX = "nginx proxy_cache (x2 workers), cacheable GET"
NO_REDIS = "proxy, cache on, cacheable GET (hit), limiter in memory"
NO_LEASES = "proxy, cache on, cacheable GET (hit), leases off"
CACHE_CONTROL = "public, max-age=3600"

# The demo API as an origin; its catalog is the answer a shared cache may store (`public, max-age=60`: a
# fill a minute per target, a few in a run of tens of thousands of hits).
DEMO_ORIGIN = """
from demo.upstream import create_app

app = create_app()
"""


def nginx_upstream(directory: Path, port: int) -> Path:
    path = directory / "upstream.conf"
    path.write_text(
        f"daemon off; pid {directory}/upstream.pid; error_log {directory}/error.log warn;\n"
        "worker_processes 1; events { worker_connections 4096; }\n"
        f"http {{ access_log off; server {{ listen 127.0.0.1:{port}; default_type application/json;\n"
        f"  location = {CACHED} {{ add_header Cache-Control '{CACHE_CONTROL}'; return 200 '{BODY}'; }}\n"
        f"  location / {{ return 200 '{BODY}'; }} }} }}\n"
    )
    return path


def nginx_cache(directory: Path, name: str, upstream_port: int, port: int) -> Path:
    """nginx as a caching proxy: Cache-Control decides what it stores (no proxy_cache_valid), one fill at a
    time per key (proxy_cache_lock), keep-alive to the upstream."""
    cache_dir = directory / f"cache-{name}"
    cache_dir.mkdir()
    # Run as root, nginx's workers are nobody: they must be able to write the cache and its temp files.
    directory.chmod(0o755)
    cache_dir.chmod(0o777)
    path = directory / f"cache-{name}.conf"
    path.write_text(
        f"daemon off; pid {directory}/cache-{name}.pid; error_log {directory}/error-{name}.log warn;\n"
        "worker_processes 2; events { worker_connections 4096; }\n"
        "http { access_log off;\n"
        f"  proxy_cache_path {cache_dir} levels=1:2 keys_zone=api:10m max_size=100m inactive=10m;\n"
        f"  upstream api {{ server 127.0.0.1:{upstream_port}; keepalive 32; }}\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{\n"
        f"    proxy_cache api; proxy_cache_lock on; proxy_temp_path {cache_dir}/tmp;\n"
        "    add_header X-Cache $upstream_cache_status;\n"
        '    proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection ""; } } }\n'
    )
    return path


def proxy_config(
    directory: Path, name: str, redis_url: str, upstream_url: str, port: int, cache: bool, lease_requests: int = 32
) -> Path:
    path = directory / f"proxy-{name}.yml"
    tier = {"burst_per_second": HUGE, "per_minute": HUGE, "per_hour": HUGE, "ai_per_day": HUGE}
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"port": port, "workers": 2, "blocking_threads": 16},
                "upstream": {"url": upstream_url},
                "redis": {"url": redis_url},
                "limits": {"tiers": dict.fromkeys(TIERS, tier), "lease_requests": lease_requests},
                "cache": {"enabled": cache, "routes": [{"name": "api", "path": "/api/v1/*"}]},
                "log_proxied_requests": False,
                "logging": {"level": "WARNING"},
            }
        )
    )
    return path


def gateway_cpu(redis_url: str, upstream_url: str, slices: int = 40, calls: int = 400) -> dict[str, list[float]]:
    """CPU µs per request of each slice, per kind, in alternating order: cache off, miss, hit (local
    layer), hit (Redis, the local layer switched off). One process, one thread, the gateway called
    directly (as bench/ratelimit_parts.py does)."""
    tier = TierSettings(burst_per_second=HUGE, per_minute=HUGE, per_hour=HUGE, ai_per_day=HUGE)
    base = ProxySettings(
        logging=LoggingSettings(level="WARNING"),
        upstream=UpstreamSettings(url=upstream_url),
        redis=RedisSettings(url=redis_url),
        limits=LimitSettings(tiers=dict.fromkeys(TIERS, tier)),
        cache=CacheSettings(routes=[CacheRouteSettings(name="api", path="/api/v1/*")]),
        log_proxied_requests=False,
    )
    cached_app = create_app(base, registry=CollectorRegistry())
    memory_app = create_app(dataclasses.replace(base, redis=RedisSettings(url="")), registry=CollectorRegistry())
    unleased = dataclasses.replace(base, limits=dataclasses.replace(base.limits, lease_requests=1))
    unleased_app = create_app(unleased, registry=CollectorRegistry())
    plain_app = create_app(dataclasses.replace(base, cache=CacheSettings(enabled=False)), registry=CollectorRegistry())
    runtime = cached_app.extensions["ratelimit_proxy"]
    runtime.cache.listener.connected.wait(10)
    local = runtime.cache.local

    counter = iter(range(10**9))

    def call(app: object, path: str, unique: bool = False) -> Callable[[], None]:
        """One GET of ``path``; ``unique``: a new query each time, so every request is a miss and a fill."""
        environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "RAW_URI": path,
            "REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "HTTP_HOST": "api.example",
            "HTTP_ACCEPT": "application/json",
        }  # fmt: skip

        def one() -> None:
            statuses: list[str] = []
            request = dict(environ)
            if unique:
                request["QUERY_STRING"] = f"n={next(counter)}"
            for _ in app.wsgi_app(request, lambda status, headers, exc_info=None: statuses.append(status)):  # type: ignore[attr-defined]
                pass
            assert statuses[0].startswith("200"), statuses

        return one

    kinds: dict[str, Callable[[], None]] = {
        "cache off": call(plain_app, UNCACHED),
        "pass (uncacheable, hit-for-pass)": call(cached_app, UNCACHED),
        "miss (fill: lookup and lock, fetch, store)": call(cached_app, CACHED, unique=True),
        "hit, local layer": call(cached_app, CACHED),
        "hit, from Redis": call(cached_app, CACHED),
        "hit, local layer, leases off": call(unleased_app, CACHED),
        "hit, limiter in memory (no Redis call)": call(memory_app, CACHED),
    }
    for one in kinds.values():
        for _ in range(calls):
            one()  # warm: connections, the entry stored
    spent: dict[str, list[float]] = {kind: [] for kind in kinds}
    order = list(kinds)
    for index in range(slices):
        for kind in order[index % len(order) :] + order[: index % len(order)]:
            runtime.cache.local = None if kind == "hit, from Redis" else local
            started = time.process_time()
            for _ in range(calls):
                kinds[kind]()
            spent[kind].append((time.process_time() - started) / calls * 1e6)
    runtime.cache.local = local
    for app in (cached_app, plain_app, memory_app, unleased_app):
        app.extensions["ratelimit_proxy"].close()
    return spent


def main() -> None:
    args = wrk_arguments(__doc__, rounds=5)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        directory = Path(tmp)
        redis_port = free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        stack.enter_context(
            process(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"], None)
        )
        nginx_port, demo_port = free_port(), free_port()
        upstreams = {"nginx": f"http://127.0.0.1:{nginx_port}", "demo API": f"http://127.0.0.1:{demo_port}"}
        stack.enter_context(
            process(["nginx", "-c", str(nginx_upstream(directory, nginx_port)), "-p", tmp], upstreams["nginx"] + CACHED)
        )
        (directory / "demo_origin.py").write_text(DEMO_ORIGIN)
        demo = granian("demo_origin:app", demo_port)
        demo[demo.index("--workers") + 1] = "1"
        env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}"}
        stack.enter_context(process(demo, upstreams["demo API"] + CACHED, env=env, cwd=tmp))
        targets: dict[tuple[str, str], str] = {}

        def start_proxy(name: str, redis: str, upstream_url: str, cache: bool, lease_requests: int = 32) -> str:
            """A proxy as ``serve`` runs it; its URL."""
            port = free_port()
            config = proxy_config(directory, name, redis, upstream_url, port, cache, lease_requests)
            metrics = directory / f"metrics-{name}"
            metrics.mkdir()
            proxy_env = {
                **os.environ,
                "VIBELUX_RATELIMIT_PROXY_CONFIG": str(config),
                "PROMETHEUS_MULTIPROC_DIR": str(metrics),
            }
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(
                process(granian("ratelimit_proxy.wsgi:app", port), url + UNCACHED, env=proxy_env, cwd=ROOT)
            )
            return url

        for upstream_name, upstream_url in upstreams.items():
            label = upstream_name.replace(" ", "-")
            ports = {"nginx": free_port()}
            urls = {
                mode: start_proxy(f"{label}-{mode}", redis_url, upstream_url, mode == "on") for mode in ("off", "on")
            }
            conf = nginx_cache(directory, label, int(upstream_url.rsplit(":", 1)[1]), ports["nginx"])
            nginx_url = f"http://127.0.0.1:{ports['nginx']}"
            stack.enter_context(process(["nginx", "-c", str(conf), "-p", tmp], nginx_url + CACHED))
            targets[(upstream_name, OFF)] = urls["off"] + UNCACHED
            targets[(upstream_name, MISS)] = urls["on"] + UNCACHED
            targets[(upstream_name, HIT)] = urls["on"] + CACHED
            targets[(upstream_name, NGINX)] = nginx_url + CACHED
            if upstream_name == "nginx":
                targets[(upstream_name, NO_REDIS)] = start_proxy(f"{label}-memory", "", upstream_url, True) + CACHED
                unleased = start_proxy(f"{label}-unleased", redis_url, upstream_url, True, lease_requests=1)
                targets[(upstream_name, NO_LEASES)] = unleased + CACHED
        runs: dict[tuple[str, str], list[dict[str, float | str]]] = {name: [] for name in targets}
        order = list(targets)
        for index in range(args.rounds):
            for name in order[index % len(order) :] + order[: index % len(order)]:
                runs[name].append(wrk(targets[name], args.seconds))
        cpu = gateway_cpu(redis_url, upstreams["nginx"])

    print(f"wrk -t2 -c32 -d{args.seconds}s, {args.rounds} interleaved rounds (order rotating); median round shown\n")
    print("| upstream | target | req/s | p50 | p99 | non-2xx (all rounds) |")
    print("|---|---|---|---|---|---|")
    for (upstream_name, target), result in runs.items():
        m = median_run(result)
        errors = sum(int(r["non_2xx"]) for r in result)
        print(f"| {upstream_name} | {target} | {float(m['rps']):.0f} | {m['p50']} | {m['p99']} | {errors} |")
    print()

    def ratios(upstream_name: str, a: str, b: str) -> list[float]:
        pairs = zip(runs[(upstream_name, a)], runs[(upstream_name, b)], strict=True)
        return sorted(float(x["rps"]) / float(y["rps"]) for x, y in pairs)

    for upstream_name in upstreams:
        for label, a, b, fmt, goal in (
            ("hit / cache off", HIT, OFF, "{:.2f}x", "goal >= 2x"),
            ("hit / nginx proxy_cache", HIT, NGINX, "{:.0%}", "goal >= 15%"),
            ("pass (cache on, uncacheable) / cache off", MISS, OFF, "{:.2f}x", "the cache's overhead"),
            ("hit / hit with leases off", HIT, NO_LEASES, "{:.2f}x", "what leases save"),
            ("hit with leases off / nginx proxy_cache", NO_LEASES, NGINX, "{:.0%}", "before leases"),
            ("hit, limiter in memory / hit", NO_REDIS, HIT, "{:.2f}x", "the limiter's Redis call"),
            ("hit, limiter in memory / nginx proxy_cache", NO_REDIS, NGINX, "{:.0%}", "the ceiling without it"),
        ):
            if (upstream_name, a) not in runs or (upstream_name, b) not in runs:
                continue
            r = ratios(upstream_name, a, b)
            listed = ", ".join(fmt.format(x) for x in r)
            print(
                f"- {upstream_name} upstream, {label}: median {fmt.format(r[len(r) // 2])} (rounds: {listed}; {goal})"
            )
    print()
    print("| one process, gateway called directly, nginx upstream | CPU µs / request: median (quartiles) | quickest |")
    print("|---|---|---|")
    for kind, values in cpu.items():
        q = statistics.quantiles(values, n=4)
        print(f"| {kind} | {statistics.median(values):.0f} ({q[0]:.0f}, {q[2]:.0f}) | {min(values):.0f} |")
    median = {kind: statistics.median(values) for kind, values in cpu.items()}
    off, miss = median["cache off"], median["miss (fill: lookup and lock, fetch, store)"]
    local, remote = median["hit, local layer"], median["hit, from Redis"]
    print(f"\n- CPU of a hit against a miss: {local / miss:.2f} (local layer), {remote / miss:.2f} (from Redis)")
    print(f"- against the cache off: hit {local / off:.2f} (local), {remote / off:.2f} (Redis); miss {miss / off:.2f}")
    print(f"- pass (uncacheable) / cache off: {median['pass (uncacheable, hit-for-pass)'] / off:.2f}")
    memory, unleased = median["hit, limiter in memory (no Redis call)"], median["hit, local layer, leases off"]
    share = 1 - memory / unleased
    print(f"- the limiter's Redis call in a local hit: {unleased - memory:.0f} µs of {unleased:.0f} ({share:.0%})")
    print(f"- a local hit with leases against leases off: {local / unleased:.2f}")


if __name__ == "__main__":
    main()
