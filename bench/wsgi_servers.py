"""Pick the production WSGI server by measurement: gunicorn (sync, gthread) vs granian.

Each server runs the same Flask app with 2 workers on a free port; wrk drives a
hello-world route and a route that waits 10 ms (an upstream call, as the proxy makes).
Run: .venv/bin/python bench/wsgi_servers.py  (needs wrk)
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

APP_SOURCE = """
import time
from flask import Flask
app = Flask(__name__)

@app.get("/hello")
def hello():
    return {"hello": "world"}

@app.get("/io")
def io():
    time.sleep(0.010)
    return {"waited_ms": 10}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_commands(port: int) -> dict[str, list[str]]:
    bind = f"127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    return {
        "gunicorn sync x2": [str(bin_dir / "gunicorn"), "-w", "2", "-b", bind, "bench_app:app"],
        "gunicorn gthread x2 t16": [
            str(bin_dir / "gunicorn"),
            "-w",
            "2",
            "--threads",
            "16",
            "-k",
            "gthread",
            "-b",
            bind,
            "bench_app:app",
        ],
        "granian x2 bt16": [
            str(bin_dir / "granian"),
            "--interface",
            "wsgi",
            "--workers",
            "2",
            "--blocking-threads",
            "16",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "bench_app:app",
        ],
    }


def wrk(url: str, seconds: int = 8) -> tuple[float, str, str]:
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url], capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1)  # type: ignore[union-attr]
    return rps, p50, p99


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=0.5)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not start")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bench_app.py").write_text(APP_SOURCE)
        rows = []
        for name, command in server_commands(free_port()).items():
            port = int(command[command.index("--port") + 1]) if "--port" in command else int(command[-2].split(":")[1])
            proc = subprocess.Popen(
                command, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ
            )
            try:
                wait_ready(f"http://127.0.0.1:{port}/hello")
                hello = wrk(f"http://127.0.0.1:{port}/hello")
                io = wrk(f"http://127.0.0.1:{port}/io")
            finally:
                proc.terminate()
                proc.wait(10)
            rows.append((name, hello, io))
        base = rows[0][1][0]
        print("| server | hello req/s | p50 | p99 | ratio | 10ms-io req/s | p50 | p99 |")
        print("|---|---|---|---|---|---|---|---|")
        for name, hello, io in rows:
            cells = [
                name,
                f"{hello[0]:.0f}",
                hello[1],
                hello[2],
                f"{hello[0] / base:.2f}",
                f"{io[0]:.0f}",
                io[1],
                io[2],
            ]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
