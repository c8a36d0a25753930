"""The production balancer (config/nginx.lb.conf, docker-compose.production.yml) run for real: Debian's nginx
with the shipped file in front of two proxy processes sharing one Redis, each trusting X-Forwarded-For from
127.0.0.1 only (the test's stand-in for the balancer's fixed address, 172.28.0.10 in compose).

The file is rewritten only where a run outside Docker must differ (the replicas' addresses, the listening
port, and daemon/pid/error_log for a process in a temporary directory); the test first proves that nothing
else changed, so what it checks is the shipped behaviour.
"""

from __future__ import annotations

import difflib
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.ratelimit_proxy.conftest import ROOT, Upstream
from tests.ratelimit_proxy.test_processes import ProxyProcess, base_config, tiers
from tests.servers import ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHIPPED = ROOT / "config" / "nginx.lb.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # Debian puts it in sbin, off a non-root user's PATH
COMPOSE_REPLICAS = "server proxy:8080 "  # Docker's DNS answers `proxy` with every replica
COMPOSE_LISTEN = "listen 8080;"
QUOTA = 6  # of the route limit on /api/v1/users; the tier's own limits stay far away
ROUTE = {"name": "users", "path": "/api/v1/users", "limits": [{"name": "users", "quota": QUOTA, "window_seconds": 60}]}


def run_here(directory: Path) -> str:
    """The main-context lines a foreground nginx needs to run unprivileged from ``directory``."""
    return f"daemon off; pid {directory}/nginx.pid; error_log {directory}/error.log warn;"


def local_config(shipped: str, replica_ports: list[int], port: int, directory: Path) -> str:
    """The shipped file with `proxy:8080` replaced by each replica on 127.0.0.1 (same server parameters),
    the listener on a free loopback port, and ``run_here`` in front."""
    lines = [run_here(directory)]
    for line in shipped.splitlines():
        indent, text = line[: len(line) - len(line.lstrip())], line.strip()
        if text.startswith(COMPOSE_REPLICAS):
            parameters = text.removeprefix(COMPOSE_REPLICAS)
            lines += [f"{indent}server 127.0.0.1:{replica} {parameters}" for replica in replica_ports]
        elif text == COMPOSE_LISTEN:
            lines.append(f"{indent}listen 127.0.0.1:{port};")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def changed_blocks(before: str, after: str) -> list[tuple[list[str], list[str]]]:
    """Every run of lines that differs between the two texts: (lines before, lines after)."""
    old, new = before.splitlines(), after.splitlines()
    opcodes = difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes()
    return [(old[i1:i2], new[j1:j2]) for tag, i1, i2, j1, j2 in opcodes if tag != "equal"]


class Balancer(ManagedProcess):
    """Debian's nginx in the foreground with the rewritten shipped config, from its own directory."""

    name = "nginx-lb"

    def __init__(self, replica_ports: list[int]) -> None:
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = local_config(SHIPPED.read_text(), replica_ports, self.port, self.workdir)
        (self.workdir / "nginx.conf").write_text(self.config)

    def command(self) -> list[str]:
        return [NGINX, "-c", str(self.workdir / "nginx.conf"), "-p", str(self.workdir)]

    def ready(self) -> bool:
        return requests.get(f"{self.url}/lb-health", timeout=1).text == "ok\n"


@dataclass
class Replica:
    """One proxy process with a demo upstream of its own: the upstream's counts say what this replica forwarded."""

    proxy: ProxyProcess
    upstream: Upstream

    def served(self, path: str) -> int:
        return self.upstream.served(path)


@pytest.fixture
def replicas(tmp_path: Path, redis_url: str) -> Iterator[list[Replica]]:
    """Two proxy replicas on one Redis, trusting X-Forwarded-For from 127.0.0.1 only."""
    started: list[Replica] = []
    clients = {"trusted_proxies": ["127.0.0.1/32"]}
    limits = tiers(10_000) | {"routes": [ROUTE]}
    try:
        for _ in range(2):
            upstream = Upstream()
            config = base_config(upstream, redis_url, clients=clients, limits=limits)
            started.append(Replica(ProxyProcess(tmp_path, config, workers=1), upstream))
        yield started
    finally:
        for replica in started:
            replica.proxy.close()
            replica.upstream.close()


def test_shipped_balancer_spreads_over_both_replicas_as_one_client_identity_and_survives_one_stopped(
    replicas: list[Replica],
) -> None:
    lb = Balancer([replica.proxy.port for replica in replicas])
    try:
        # The test tests the shipped file: only the compose-specific lines differ.
        shipped = SHIPPED.read_text()
        (replica_line,) = [line for line in shipped.splitlines() if line.strip().startswith(COMPOSE_REPLICAS)]
        (listen_line,) = [line for line in shipped.splitlines() if line.strip() == COMPOSE_LISTEN]
        assert changed_blocks(shipped, lb.config) == [
            ([], [run_here(lb.workdir)]),
            ([replica_line], [replica_line.replace("proxy:8080", f"127.0.0.1:{r.proxy.port}") for r in replicas]),
            ([listen_line], [listen_line.replace("8080", f"127.0.0.1:{lb.port}")]),
        ]
        for setting in (
            "underscores_in_headers off;",
            "proxy_set_header X-Forwarded-For $remote_addr;",
            "proxy_next_upstream error timeout;",
        ):
            assert setting in shipped, f"config/nginx.lb.conf no longer says {setting!r}: revisit this test"

        lb.start()
        with requests.Session() as session:

            def through_lb(path: str, headers: dict[str, str] | None = None) -> requests.Response:
                return session.get(lb.url + path, headers=headers, timeout=5)

            def to_replica(path: str, headers: dict[str, str]) -> requests.Response:
                """Around the balancer, from the same (trusted) address: what the balancer prevents."""
                return requests.get(replicas[0].proxy.url + path, headers=headers, timeout=5)

            # (1) Both replicas serve, each through its own upstream.
            assert [through_lb("/api/v1/echo").status_code for _ in range(10)] == [200] * 10
            spread = [replica.served("/api/v1/echo") for replica in replicas]
            assert sum(spread) == 10 and min(spread) > 0, spread

            # (2) and (3): the identity is the balancer's $remote_addr. The proxy writes the client it believed
            # into the X-Forwarded-For it sends upstream ("<client>, <peer>" for a forwarded client, the peer
            # alone otherwise). The demo upstream cannot show a header spelled with underscores (Werkzeug's
            # server drops them), so what the proxy believed is the observable.
            spoofs = [
                {"X-Forwarded-For": "203.0.113.9"},
                {"X-Forwarded-For": "203.0.113.10, 198.51.100.1"},
                {"X_Forwarded_For": "203.0.113.11"},
            ]
            for spoof in spoofs:
                echoed = through_lb("/api/v1/echo", spoof).json()["headers"]
                assert echoed["X-Forwarded-For"] == "127.0.0.1", spoof
            # Control, around the balancer from the same trusted address: there the spoof works (granian maps
            # X_Forwarded_For to HTTP_X_FORWARDED_FOR, a later one winning over X-Forwarded-For).
            direct = to_replica("/api/v1/echo", spoofs[2]).json()["headers"]
            assert direct["X-Forwarded-For"] == "203.0.113.11, 127.0.0.1"

            # One bucket for every spoof, shared by both replicas through Redis: exactly QUOTA admitted.
            statuses = [through_lb("/api/v1/users", spoofs[i % len(spoofs)]).status_code for i in range(2 * QUOTA)]
            assert statuses == [200] * QUOTA + [429] * QUOTA
            admitted = [replica.served("/api/v1/users") for replica in replicas]
            assert sum(admitted) == QUOTA and min(admitted) > 0, admitted
            # Control: to a replica directly, a spoof is a client of its own, still under its quota.
            assert to_replica("/api/v1/users", spoofs[0]).status_code == 200

            # (4) One replica stopped: nginx passes each request on to the other (proxy_next_upstream error).
            replicas[1].proxy.close()
            before = [replica.served("/api/v1/echo") for replica in replicas]
            assert Counter(through_lb("/api/v1/echo").status_code for _ in range(10)) == {200: 10}
            after = [replica.served("/api/v1/echo") for replica in replicas]
            assert [after[0] - before[0], after[1] - before[1]] == [10, 0]
    finally:
        lb.close()
