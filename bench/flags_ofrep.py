"""OFREP requests/s (single flag; bulk of 50 flags) against a hello-world route of the same app, served
by the same granian server and workers, with Redis and SQLite as in production.

Run: .venv/bin/python -m bench.flags_ofrep   (needs wrk and redis-server; --seconds N to change length)
     .venv/bin/python -m bench.flags_ofrep --in-process   (the app's WSGI callable in this process, no server
     and no wrk: CPU per request on one thread, routes taking turns, so a shared machine's load moves less)
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path
from typing import Any

import requests
from sqlalchemy.orm import Session

from flags_service.app import MIGRATIONS, create_app
from flags_service.settings import FlagsSettings, RedisSettings
from flags_service.storage.environments import EnvironmentStore
from flags_service.storage.flags import FlagStore
from flags_service.storage.sdk_keys import SdkKeyStore
from flags_service.storage.tables import metadata
from service_kit.db import make_engine, upgrade
from service_kit.server import granian_command, prepare_multiprocess_dir
from service_kit.settings import DatabaseSettings, LoggingSettings, ServerSettings

WORKERS, THREADS, CONNECTIONS = 2, 16, 32
FLAG_COUNT = 50
IN_PROCESS_ROUNDS, IN_PROCESS_REQUESTS = 5, 2000
TIERS, COUNTRIES = ("free", "professional", "enterprise"), ("DE", "NL", "US", "FR", "GB")
ROUTES = (
    ("hello world (GET)", "GET", "/hello"),
    ("OFREP single flag (POST)", "POST", "/ofrep/v1/evaluate/flags/flag-01"),
    (f"OFREP bulk, {FLAG_COUNT} flags (POST)", "POST", "/ofrep/v1/evaluate/flags"),
)
APP_SOURCE = """
from flags_service.app import create_app
from flags_service.cli import load_settings

app = create_app(load_settings())


@app.get("/hello")
def hello():
    return {"hello": "world"}
"""
WRK_SCRIPT = """
local counter = 0
local tiers = {"free", "professional", "enterprise"}
local countries = {"DE", "NL", "US", "FR", "GB"}
request = function()
  counter = counter + 1
  local tier = tiers[counter % 3 + 1]
  local country = countries[counter % 5 + 1]
  local body = '{"context":{"targetingKey":"user-' .. (counter % 5000) .. '","tier":"' .. tier ..
    '","country":"' .. country .. '"}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Authorization"] = "Bearer TOKEN"}, body)
end
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_flag(index: int) -> dict[str, Any]:
    """A mix like a real project: a third static, a third targeted with three rules, a third rollouts."""
    flag: dict[str, Any] = {"key": f"flag-{index:02d}", "variants": {"on": True, "off": False}, "offVariant": "off"}
    kind = index % 3
    if kind == 0:
        state: dict[str, Any] = {"enabled": True, "fallthrough": {"variant": "on"}}
    elif kind == 1:
        rules = [
            {"clauses": [{"attribute": "tier", "op": "in", "values": ["enterprise"]}], "serve": {"variant": "on"}},
            {
                "clauses": [{"attribute": "email", "op": "endsWith", "values": ["@vibelux.io"]}],
                "serve": {"variant": "on"},
            },
            {"clauses": [{"attribute": "country", "op": "in", "values": ["DE", "NL"]}], "serve": {"variant": "on"}},
        ]
        state = {"enabled": True, "rules": rules, "fallthrough": {"variant": "off"}}
    else:
        rollout = [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]
        state = {"enabled": True, "fallthrough": {"rollout": rollout}}
    flag["environments"] = {"production": state}
    return flag


def seed(url: str) -> str:
    engine = make_engine(url)
    upgrade(engine, MIGRATIONS, metadata)
    with Session(engine) as session:
        environments = ["development", "staging", "production"]
        EnvironmentStore(session, environments).ensure_environments()
        store = FlagStore(session, environments)
        for index in range(FLAG_COUNT):
            store.create_flag(demo_flag(index), "bench")
        _, token = SdkKeyStore(session, environments).create_sdk_key("production", "server", "bench")
        session.commit()
    engine.dispose()
    return token


def wrk(url: str, seconds: int, script: Path | None = None) -> tuple[float, str, str]:
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\n\s+50%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"\n\s+99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non_2xx:
        raise RuntimeError(f"{url}: {non_2xx.group(1)} error responses")
    return rps, p50, p99


def request_environ(method: str, path: str, counter: int, token: str) -> dict[str, Any]:
    """A WSGI environ like the wrk script's requests: the same rotation of users, tiers and countries."""
    context = {
        "targetingKey": f"user-{counter % 5000}",
        "tier": TIERS[counter % 3],
        "country": COUNTRIES[counter % 5],
    }
    body = json.dumps({"context": context}).encode() if method == "POST" else b""
    return {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8082",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8082",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def in_process(database: str, redis_url: str, token: str) -> list[tuple[str, float]]:
    """Median µs per request of each route over rounds in which the routes take turns."""
    settings = FlagsSettings(
        database=DatabaseSettings(url=database),
        redis=RedisSettings(url=redis_url),
        logging=LoggingSettings(level="WARNING"),
    )
    app = create_app(settings)
    app.add_url_rule("/hello", "hello", lambda: {"hello": "world"})

    def start_response(status: str, headers: Iterable[tuple[str, str]], exc_info: object = None) -> None:
        if not status.startswith("200"):
            raise RuntimeError(f"in-process request answered {status}")

    def run(method: str, path: str, first: int, count: int) -> float:
        environs = [request_environ(method, path, first + index, token) for index in range(count)]
        started = time.perf_counter()
        for environ in environs:
            b"".join(app.wsgi_app(environ, start_response))
        return (time.perf_counter() - started) / count * 1e6

    timings: dict[str, list[float]] = {name: [] for name, _, _ in ROUTES}
    try:
        for _, method, path in ROUTES:
            run(method, path, 0, IN_PROCESS_REQUESTS)  # warm-up: snapshot, plans, layouts, memo
        for round_number in range(IN_PROCESS_ROUNDS):
            for name, method, path in ROUTES:
                timings[name].append(run(method, path, round_number * IN_PROCESS_REQUESTS, IN_PROCESS_REQUESTS))
    finally:
        service = app.extensions["flags"]
        service.recorder.close()
        service.cache.close()
    return [(name, statistics.median(values)) for name, values in timings.items()]


def print_in_process(rows: list[tuple[str, float]]) -> None:
    hello = rows[0][1]
    print(f"in process, one thread: {IN_PROCESS_ROUNDS} rounds of {IN_PROCESS_REQUESTS} requests per route\n")
    print("| route | µs per request (median) | vs hello |")
    print("|---|---|---|")
    for name, micros in rows:
        print(f"| {name} | {micros:.1f} | {hello / micros:.2f} |")


def main() -> None:
    seconds = int(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 8
    with tempfile.TemporaryDirectory(prefix="flags-bench-") as tmp:
        workdir = Path(tmp)
        redis_port, port = free_port(), free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        database = f"sqlite:///{workdir / 'flags.sqlite3'}"
        token = seed(database)
        if "--in-process" in sys.argv:
            try:
                rows = in_process(database, f"redis://127.0.0.1:{redis_port}/0", token)
            finally:
                redis.terminate()
                redis.wait(5)
            print_in_process(rows)
            return
        (workdir / "bench_flags_app.py").write_text(APP_SOURCE)
        (workdir / "flags.yml").write_text("logging:\n  level: WARNING\n")
        (workdir / "wrk.lua").write_text(WRK_SCRIPT.replace("TOKEN", token))
        env = {
            **os.environ,
            "PYTHONPATH": f"{tmp}:{Path.cwd()}",
            "VIBELUX_FLAGS_CONFIG": str(workdir / "flags.yml"),
            "FLAGS_DATABASE__URL": database,
            "FLAGS_REDIS__URL": f"redis://127.0.0.1:{redis_port}/0",
            "VIBELUX_RUN_DIR": str(workdir / "run"),
        }
        env["PROMETHEUS_MULTIPROC_DIR"] = str(prepare_multiprocess_dir("flags", workdir / "run"))
        settings = ServerSettings(port=port, workers=WORKERS, blocking_threads=THREADS)
        server = subprocess.Popen(
            granian_command("bench_flags_app:app", settings),
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    requests.get(f"{base}/hello", timeout=1)
                    break
                except requests.RequestException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            check = requests.post(
                f"{base}/ofrep/v1/evaluate/flags",
                json={"context": {"targetingKey": "u1"}},
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
            assert check.status_code == 200 and len(check.json()["flags"]) == FLAG_COUNT, check.text
            wrk(f"{base}/hello", 2)  # warm-up
            rows = [
                (name, wrk(f"{base}{path}", seconds, workdir / "wrk.lua" if method == "POST" else None))
                for name, method, path in ROUTES
            ]
        finally:
            server.terminate()
            server.wait(15)
            redis.terminate()
            redis.wait(5)
    hello = rows[0][1][0]
    print(f"granian x{WORKERS} (blocking threads {THREADS}), wrk -t2 -c{CONNECTIONS}, {seconds} s per route\n")
    print("| route | req/s | p50 | p99 | vs hello |")
    print("|---|---|---|---|---|")
    for name, (rps, p50, p99) in rows:
        print(f"| {name} | {rps:.0f} | {p50} | {p99} | {rps / hello:.2f} |")


if __name__ == "__main__":
    main()
