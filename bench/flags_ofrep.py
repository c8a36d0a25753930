"""OFREP requests/s (single flag; bulk of 50 flags) against a hello-world route of the same app, served
by the same granian server and workers, with Redis and SQLite as in production.

Run: .venv/bin/python -m bench.flags_ofrep   (needs wrk and redis-server; --seconds N to change length)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy.orm import Session

from flags_service.app import MIGRATIONS
from flags_service.storage import FlagStore, metadata
from service_kit.db import make_engine, upgrade
from service_kit.server import granian_command, prepare_multiprocess_dir
from service_kit.settings import ServerSettings

WORKERS, THREADS, CONNECTIONS = 2, 16, 32
FLAG_COUNT = 50
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
local tiers = {"free", "pro", "enterprise"}
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
        store = FlagStore(session, ["development", "staging", "production"], ["free", "pro", "enterprise"])
        store.ensure_environments()
        for index in range(FLAG_COUNT):
            store.create_flag(demo_flag(index), "bench")
        _, token = store.create_sdk_key("production", "server", "bench")
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
                ("hello world (GET)", wrk(f"{base}/hello", seconds)),
                (
                    "OFREP single flag (POST)",
                    wrk(f"{base}/ofrep/v1/evaluate/flags/flag-01", seconds, workdir / "wrk.lua"),
                ),
                (
                    f"OFREP bulk, {FLAG_COUNT} flags (POST)",
                    wrk(f"{base}/ofrep/v1/evaluate/flags", seconds, workdir / "wrk.lua"),
                ),
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
