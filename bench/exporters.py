"""Scrape cost of the exporters, each against a peer in the same run.

1. Infra exporter vs Debian's prometheus-node-exporter, both limited to the same collectors (cpu, loadavg,
   meminfo, diskstats, filesystem, netdev): wall time per scrape and server CPU time per scrape, scrapes
   interleaved so both see the same machine noise. The infra exporter is also measured with its process
   groups on (it walks the process table).
2. Business exporter on the demo database (3000 users, 12 months): scrape time (served from the last
   results) against running its queries directly, which is what a scrape would cost if it queried.

Run: .venv/bin/python bench/exporters.py [--scrapes 300]   (needs prometheus-node-exporter)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo.business_db import generate
from exporters.business.analytics import runner
from exporters.business.settings import ENV_PREFIX, BusinessSettings
from exporters.database import read_only_engine
from service_kit.config import load_settings
from tests.servers import free_port, wait_until

COLLECTORS = ["cpu", "loadavg", "meminfo", "diskstats", "filesystem", "netdev"]


class Target:
    """A metrics server process: scraped over HTTP, its CPU time read from /proc."""

    def __init__(self, name: str, command: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.process = subprocess.Popen(
            command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: requests.get(self.url, timeout=1).status_code == 200)
        self.session = requests.Session()
        self.durations: list[float] = []
        self.cpu_seconds = 0.0
        self.size = 0

    def cpu(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def scrape(self, record: bool = True) -> None:
        before = self.cpu() if record else 0.0
        started = time.perf_counter()
        body = self.session.get(self.url, timeout=10).content
        elapsed = time.perf_counter() - started
        if record:
            self.durations.append(elapsed)
            self.cpu_seconds += self.cpu() - before
            self.size = len(body)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def interleave(targets: list[Target], scrapes: int, warmup: int = 20) -> None:
    for _ in range(warmup):
        for target in targets:
            target.scrape(record=False)
    for _ in range(scrapes):
        for target in targets:
            target.scrape()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}ms"


def row(target: Target, peer: Target | None) -> str:
    p50 = statistics.median(target.durations)
    p99 = statistics.quantiles(target.durations, n=100)[98]
    cpu = target.cpu_seconds / len(target.durations)
    if peer is None:
        ratios = "1.00 | 1.00"
    else:
        peer_cpu = peer.cpu_seconds / len(peer.durations)
        ratios = f"{p50 / statistics.median(peer.durations):.2f} | {cpu / peer_cpu:.2f}"
    return f"| {target.name} | {ms(p50)} | {ms(p99)} | {ms(cpu)} | {target.size} | {ratios} |"


def exporter_command(name: str, config: Path) -> list[str]:
    return [sys.executable, "-m", f"exporters.{name}.cli", "--config", str(config), "serve"]


def bench_infra(workdir: Path, scrapes: int) -> list[str]:
    binary = shutil.which("prometheus-node-exporter")
    if binary is None:
        raise SystemExit("needs prometheus-node-exporter (BENCH=1 scripts/system-deps.sh)")
    port = free_port()
    node = Target(
        "prometheus-node-exporter 1.5 (same 6 collectors)",
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults"]
        + [f"--collector.{name}" for name in COLLECTORS],
        port,
    )
    targets = [node]
    shipped = yaml.safe_load(Path("config/exporters/infra.yml").read_text())
    for label, collectors in (("infra exporter (same 6 collectors)", COLLECTORS),
                              ("infra exporter + process groups", [*COLLECTORS, "processes"])):  # fmt: skip
        port = free_port()
        config = workdir / f"infra-{len(targets)}.yml"
        config.write_text(yaml.safe_dump({**shipped, "server": {"port": port}, "collectors": collectors}))
        targets.append(Target(label, exporter_command("infra", config), port))
    try:
        interleave(targets, scrapes)
        return [row(target, None if target is node else node) for target in targets]
    finally:
        for target in targets:
            target.stop()


def timed(work: Callable[[], object], repeats: int) -> list[float]:
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        durations.append(time.perf_counter() - started)
    return durations


def bench_business(workdir: Path, scrapes: int) -> list[str]:
    database = workdir / "platform.sqlite3"
    counts = generate(database, total_users=3000, months=12, seed=7, progress=False)
    url = f"sqlite:///{database}"
    port = free_port()
    shipped = yaml.safe_load(Path("config/exporters/business.yml").read_text())
    config = workdir / "business.yml"
    config.write_text(yaml.safe_dump({**shipped, "server": {"port": port}}))
    exporter = Target("business exporter scrape (cached results)", exporter_command("business", config), port,
                      {"EXPORTER_BUSINESS_DATABASE__URL": url})  # fmt: skip
    try:
        queries = len(shipped["queries"])
        wait_until(lambda: requests.get(exporter.url, timeout=1).text.count("business_query_last_success") >= queries)
        interleave([exporter], scrapes)
    finally:
        exporter.stop()
    settings = load_settings(BusinessSettings, "config/exporters/business.yml", ENV_PREFIX, {})
    engine = read_only_engine(url, 30)
    runners = [runner(engine, spec) for spec in settings.queries.values()]
    direct = timed(lambda: [run() for run in runners], max(10, scrapes // 10))
    scrape_p50, direct_p50 = statistics.median(exporter.durations), statistics.median(direct)
    return [
        f"Demo database: {counts['users']} users, {counts['subscriptions']} subscriptions, "
        f"{counts['sessions']} sessions, {counts['ai_requests']} AI requests.",
        "",
        "| what | p50 | p99 | ratio to running the queries |",
        "|---|---|---|---|",
        f"| scrape of the business exporter ({scrapes} scrapes) | {ms(scrape_p50)} | "
        f"{ms(statistics.quantiles(exporter.durations, n=100)[98])} | {scrape_p50 / direct_p50:.3f} |",
        f"| running its {len(runners)} default queries once ({len(direct)} runs) | {ms(direct_p50)} | "
        f"{ms(max(direct))} (max) | 1.000 |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=300)
    args = parser.parse_args()
    os.chdir(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory(prefix="bench-exporters-") as tmp:
        infra = bench_infra(Path(tmp), args.scrapes)
        business = bench_business(Path(tmp), args.scrapes)
    print(f"Infra exporter vs node_exporter, {args.scrapes} interleaved scrapes each (after 20 warm-up):\n")
    print("| exporter | scrape p50 | scrape p99 | server CPU per scrape | bytes | p50 ratio | CPU ratio |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(infra))
    print("\nBusiness exporter:\n")
    print("\n".join(business))


if __name__ == "__main__":
    main()
