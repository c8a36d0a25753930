"""A Redis primary SIGKILLed under bounded load, through the proxy as deployed (``vibelux-proxy serve``):
shared by tests/ratelimit_proxy/test_failover.py (which asserts the goals) and bench/redis_failover.py
(which reports the figures).

Clients send at a fixed rate each, above their per-second quota, so every response says whether limits
applied: a 429, or RateLimit headers, means the limiter decided; neither means it failed open. Timed from
the kill: when the topology promoted a replica (detection), and when the victim client's requests were
decided again (resumed). Then the killed node starts again and rejoins as a replica, and requests go on
being decided. ``/readyz`` of the admin process is polled throughout.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from ratelimit_proxy.limiter import Limit
from ratelimit_proxy.limiter_storage import counter_key
from service_kit.tiers import TIERS
from tests.redis_topologies import PASSWORD, RedisClusterServers, RedisNode, RedisSentinelServers
from tests.servers import free_port, port_open, wait_until

ROOT = Path(__file__).parents[2]
REQUESTS_PER_SECOND = 40  # per client; its tier admits 5 a second
ANY_LIMIT = Limit("burst", 1, 1)


@dataclass
class Sample:
    at: float  # seconds after the kill (negative before it)
    client: str
    status: int
    decided: bool  # the limiter answered: a 429 or RateLimit headers


@dataclass
class FailoverResult:
    topology: str
    detection_seconds: float  # kill -> a replica is the new primary
    resumed_seconds: float  # kill -> the victim client's requests decided again
    samples: list[Sample] = field(default_factory=list)
    readiness: list[tuple[float, str]] = field(default_factory=list)
    returned_as: str = ""  # the killed node's role once it ran again

    @property
    def statuses(self) -> Counter[int]:
        return Counter(s.status for s in self.samples)

    def undecided(self, client: str, after: float = 0.0) -> int:
        """Requests of ``client`` served without limits after ``after`` seconds from the kill."""
        return sum(1 for s in self.samples if s.client == client and s.at > after and not s.decided)

    def admitted_per_second(self, client: str, start: float, end: float) -> float:
        admitted = sum(1 for s in self.samples if s.client == client and start <= s.at < end and s.status == 200)
        return admitted / (end - start)


class ServedProxy:
    """``vibelux-proxy serve`` (admin process plus two workers) on a topology's URL and password."""

    def __init__(self, tmp: Path, redis_url: str, upstream_url: str, sentinel: bool) -> None:
        self.port, self.admin_port = free_port(), free_port()
        free = {"burst_per_second": 5, "per_minute": 100_000, "per_hour": 1_000_000, "ai_per_day": 1000}
        config = {
            "server": {"port": self.port, "workers": 2},
            "admin": {"server": {"port": self.admin_port}},
            "database": {"url": f"sqlite:///{tmp / 'proxy.sqlite3'}"},
            "logging": {"level": "ERROR"},
            "log_proxied_requests": False,
            "upstream": {"url": upstream_url},
            "redis": {"url": redis_url},  # every other setting as shipped: 50 ms timeout, 1 s breaker reset
            "limits": {"tiers": dict.fromkeys(TIERS, free)},
            "clients": {"trusted_proxies": ["127.0.0.1/32"]},
            "abuse": {rule: {"mode": "off"} for rule in ("limit_breaches", "scanning", "attack_paths", "many_keys")},
        }
        path = tmp / "proxy.yml"
        path.write_text(yaml.safe_dump(config))
        env = {
            **os.environ,
            "VIBELUX_RATELIMIT_PROXY_CONFIG": str(path),
            "VIBELUX_RUN_DIR": str(tmp),
            "RATELIMIT_PROXY_REDIS__PASSWORD": PASSWORD,
        }
        if sentinel:
            env["RATELIMIT_PROXY_REDIS__SENTINEL_PASSWORD"] = PASSWORD
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process = subprocess.Popen([str(ROOT / ".venv/bin/vibelux-proxy"), "serve"], cwd=ROOT, env=env)
        wait_until(lambda: port_open(self.port) and port_open(self.admin_port), timeout=30)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(15)


def cluster_clients(cluster: RedisClusterServers) -> tuple[RedisNode, dict[str, str]]:
    """The master to kill, a client whose counters it holds, and one on another master."""
    victim_master = cluster.masters()[0]
    clients: dict[str, str] = {}
    for i in range(1, 250):
        ip = f"198.51.100.{i}"
        owner = cluster.master_of(counter_key(f"ip:{ip}", ANY_LIMIT))
        role = "victim" if owner is victim_master else "other"
        clients.setdefault(role, ip)
        if len(clients) == 2:
            return victim_master, clients
    raise AssertionError("no client on each side")


def run(topology: str, tmp: Path, upstream_url: str, after_resume: float = 2.0) -> FailoverResult:
    """Start the topology and the proxy, kill the primary under load, and time detection and recovery."""
    servers: RedisClusterServers | RedisSentinelServers
    if topology == "cluster":
        servers = RedisClusterServers()
        servers.start()
        master, clients = cluster_clients(servers)
        replica = next(n for n in servers.nodes if n is not master and _replica_of(n, master))
    else:
        servers = RedisSentinelServers()
        servers.start()
        master, replica, clients = servers.primary, servers.replica, {"victim": "198.51.100.1"}
    proxy = ServedProxy(tmp, servers.url, upstream_url, sentinel=topology == "sentinel")
    samples: list[Sample] = []  # ``at`` is time.monotonic() until the end, then seconds from the kill
    readiness: list[tuple[float, str]] = []
    stop = threading.Event()

    def load(name: str, ip: str) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                started = time.monotonic()
                response = session.get(f"http://127.0.0.1:{proxy.port}/api/v1/users", headers={"X-Forwarded-For": ip})
                decided = response.status_code == 429 or "RateLimit" in response.headers
                samples.append(Sample(started, name, response.status_code, decided))
                stop.wait(max(0.0, 1 / REQUESTS_PER_SECOND - (time.monotonic() - started)))

    def probe() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                at = time.monotonic()
                body: Any = session.get(f"http://127.0.0.1:{proxy.admin_port}/readyz", timeout=5).json()
                readiness.append((at, str(body["status"])))
                stop.wait(0.1)

    threads = [threading.Thread(target=load, args=item, daemon=True) for item in clients.items()]
    threads.append(threading.Thread(target=probe, daemon=True))
    try:
        for thread in threads:
            thread.start()
        time.sleep(2.0)  # steady state: limits decided, workers' connections warm
        killed_at = time.monotonic()
        master.kill()
        wait_until(lambda: replica.role() == "master", timeout=30, interval=0.02)
        promoted_at = time.monotonic()
        wait_until(lambda: _resumed_at(samples, killed_at) is not None, timeout=30, interval=0.02)
        # The old primary comes back, as a replica now (the cluster report: limits never returned after this).
        master.start()
        # A Sentinel converts a returning old primary only after it has reported "master" for 4 publish
        # periods (8 s), seen on an INFO poll up to 10 s apart, and 16 s after its SDOWN began: over 20 s
        # on a busy 2-core machine (CI saw it).
        wait_until(lambda: master.role() == "slave", timeout=60, interval=0.1)
        time.sleep(after_resume)
        returned_as = master.role()
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        proxy.close()
        servers.close()
    resumed_at = _resumed_at(samples, killed_at)
    assert resumed_at is not None
    for sample in samples:
        sample.at -= killed_at
    return FailoverResult(
        topology,
        promoted_at - killed_at,
        resumed_at - killed_at,
        samples,
        [(at - killed_at, status) for at, status in readiness],
        returned_as,
    )


def _resumed_at(samples: list[Sample], killed_at: float) -> float | None:
    """When the victim's requests were decided again for good: the first decided one after its last
    undecided one (None while it has had no undecided request yet, or none decided since)."""
    victim = [s for s in list(samples) if s.client == "victim" and s.at >= killed_at]
    undecided = [s.at for s in victim if not s.decided]
    if not undecided:
        return None
    after = [s.at for s in victim if s.decided and s.at > max(undecided)]
    return min(after) if after else None


def _replica_of(node: RedisNode, master: RedisNode) -> bool:
    info = node.client().info("replication")
    return info["role"] == "slave" and int(info["master_port"]) == master.port
