"""Ticket creation rate through the API: POST /api/v1/tickets under granian (2 workers, SQLite), by wrk.

The peer in the same run is GET /healthz on the same server (no database write), so the ratio shows what
a creation costs (two inserts, an event, SLA recompute, FTS reindex, one commit) over the HTTP floor.
Run: .venv/bin/python bench/tickets_create.py  (needs wrk)
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from sqlalchemy.orm import Session

from service_kit.auth import create_token
from service_kit.db import make_engine
from tickets_app.cli import migrate
from tickets_app.models import SlaPolicy

SECONDS = 10
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
counter = 0
request = function()
  counter = counter + 1
  wrk.body = '{"subject": "Bench ticket ' .. counter .. '", "body": "Checkout fails with error 502 on step '
    .. counter .. '", "priority": "high"}'
  return wrk.format()
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wrk(url: str, script: Path | None = None) -> tuple[float, str]:
    command = ["wrk", "-t2", "-c16", f"-d{SECONDS}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE).group(1)  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return rate, f"p50 {p50}, p99 {p99}, non-2xx {non_2xx.group(1) if non_2xx else 0}"


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-tickets-"))
    url = f"sqlite:///{workdir / 'tickets.sqlite3'}"
    migrate(url)
    with Session(make_engine(url)) as session:
        session.add(SlaPolicy(name="all", position=0, definition={"targets": {"first_response": 60}}))
        token, _ = create_token(session, "bench", "customer", subject="bench-customer", tier="professional")
        session.commit()
    port = free_port()
    env = {
        **os.environ,
        "TICKETS_SERVER__PORT": str(port),
        "TICKETS_DATABASE__URL": url,
        "TICKETS_SERVER__WORKERS": "2",
        "TICKETS_LOGGING__LEVEL": "WARNING",
        "VIBELUX_RUN_DIR": str(workdir),
        "TICKETS_SLA__SWEEP_INTERVAL_SECONDS": "0",
        "VIBELUX_TICKETS_CONFIG": str(workdir / "none.yml"),
    }
    (workdir / "none.yml").write_text("{}\n")
    server = subprocess.Popen(
        [sys.executable, "-m", "tickets_app.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        script = workdir / "create.lua"
        script.write_text(LUA % token)
        health_rate, health_detail = wrk(f"{base}/healthz")
        create_rate, create_detail = wrk(f"{base}/api/v1/tickets", script)
        created = requests.get(
            f"{base}/api/v1/tickets?page[size]=1", timeout=5, headers={"Authorization": f"Bearer {token}"}
        ).json()
        print("| route | req/s | latency | ratio |")
        print("|---|---|---|---|")
        print(f"| GET /healthz (peer) | {health_rate:.0f} | {health_detail} | 1.00 |")
        print(f"| POST /api/v1/tickets | {create_rate:.0f} | {create_detail} | {create_rate / health_rate:.2f} |")
        print(json.dumps({"last_ticket_id": created["data"][0]["id"] if created["data"] else None}))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
