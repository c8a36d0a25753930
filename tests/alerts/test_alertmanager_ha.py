"""Issue 11 with the real parts: two clustered Alertmanagers (the repository's routing) notifying a real desk.

group_interval (1s) is shorter than the peer timeout (4s), as when the incident was seen. Prometheus posts
every alert to both peers, so both do the same: the first peer notifies firing, then resolved one
group_interval later, while the second peer is still waiting out its peer timeout with the firing it
computed first. When it wakes, the notification log holds "resolved", not its firing set, so it sends that
stale firing. The desk must log it as stale and leave the ticket resolved.

Also the shipped pair: Procfile.ha and config/prometheus.ha.yml (`HA=1 make up`), and
scripts/alertmanager.sh clustering two peers.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy.orm import Session

from service_kit.auth import create_token
from service_kit.db import make_engine
from tests import procfile
from tests.alerts.helpers import REPO, alertmanager_config
from tests.alerts.stack import IncidentDesk
from tests.servers import AlertmanagerServer, free_port, wait_until
from tickets_app.cli import migrate

PEER_TIMEOUT = 4.0
LABELS = {"alertname": "AlertmanagerHAProbe", "service": "tickets", "severity": "warning"}


class Desk:
    """The support desk served on a free port, with the webhook token and an agent token to read it back."""

    def __init__(self) -> None:
        self.webhook_token = secrets.token_urlsafe(24)
        self.server = IncidentDesk()
        migrate(self.server.database_url)
        os.environ["TICKETS_ALERTS__WEBHOOK_TOKEN"] = self.webhook_token
        try:
            self.server.start()
        finally:
            os.environ.pop("TICKETS_ALERTS__WEBHOOK_TOKEN", None)
        with Session(make_engine(self.server.database_url)) as session:
            self.agent_token, _ = create_token(session, "ha-test", "agent", subject="agent-ha")
            session.commit()

    def get(self, path: str, **params: str) -> Any:
        response = requests.get(
            f"{self.server.url}/api/v1{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.agent_token}"},
            timeout=5,
        )
        response.raise_for_status()
        return response.json()["data"]

    def tickets(self) -> list[dict[str, Any]]:
        return list(self.get("/tickets", tag=LABELS["alertname"].lower()))

    def events(self, ticket_id: int) -> list[dict[str, Any]]:
        return list(self.get(f"/tickets/{ticket_id}/events"))


@pytest.fixture
def desk() -> Iterator[Desk]:
    running = Desk()
    yield running
    running.server.close()


@pytest.fixture
def peers(desk: Desk) -> Iterator[list[AlertmanagerServer]]:
    """Two peers, each given the other with --cluster.peer; gossip sped up so they settle in about 2 s."""
    config = alertmanager_config(
        webhook_url=f"{desk.server.url}/api/v1/alerts/webhook",
        timings={"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
    )
    cluster_ports = [free_port(), free_port()]
    pair = []
    for own, other in (cluster_ports, cluster_ports[::-1]):
        server = AlertmanagerServer(
            config,
            cluster_args=[
                f"--cluster.listen-address=127.0.0.1:{own}",
                f"--cluster.advertise-address=127.0.0.1:{own}",
                f"--cluster.peer=127.0.0.1:{other}",
                f"--cluster.peer-timeout={PEER_TIMEOUT:.0f}s",
                "--cluster.gossip-interval=50ms",
                "--cluster.pushpull-interval=1s",
                "--log.level=warn",
            ],
        )
        (server.workdir / "secrets").mkdir()
        (server.workdir / "secrets" / "support-desk-webhook-token").write_text(desk.webhook_token)
        pair.append(server)
    try:
        for server in pair:
            server.start()
        wait_until(lambda: all(_clustered(server) for server in pair), timeout=20, interval=0.1)
        yield pair
    finally:
        for server in pair:
            server.close()


def _clustered(server: AlertmanagerServer) -> bool:
    cluster = requests.get(f"{server.url}/api/v2/status", timeout=1).json()["cluster"]
    return cluster["status"] == "ready" and len(cluster["peers"]) == 2


def _post_to_every_peer(peers: list[AlertmanagerServer], alert: dict[str, Any]) -> None:
    """What Prometheus does with every Alertmanager listed in alerting.alertmanagers."""
    for server in peers:
        requests.post(f"{server.url}/api/v2/alerts", json=[alert], timeout=5).raise_for_status()


@pytest.mark.integration
def test_stale_firing_of_the_second_peer_does_not_reopen_the_resolved_incident(
    desk: Desk, peers: list[AlertmanagerServer]
) -> None:
    assert all(_clustered(server) for server in peers)  # each sees both members, settled
    alert = {"labels": LABELS, "startsAt": datetime.now(UTC).isoformat()}
    _post_to_every_peer(peers, alert)
    wait_until(lambda: [t["status"] for t in desk.tickets()] == ["open"], timeout=10)

    _post_to_every_peer(peers, alert | {"endsAt": datetime.now(UTC).isoformat()})
    (ticket,) = desk.tickets()
    # The resolution, then the desk's answer to the second peer's firing: ignored, or (the bug) reopened.
    wait_until(lambda: len(_outcomes(desk.events(ticket["id"]))) >= 2, timeout=PEER_TIMEOUT + 8)

    (ticket,) = desk.tickets()
    assert _outcomes(desk.events(ticket["id"])) == ["resolved", "alert_stale"]
    assert ticket["status"] == "resolved"
    webhook_sent = [_notifications_sent(server) for server in peers]
    assert min(webhook_sent) >= 1, f"both peers notified the desk: {webhook_sent}"


def _outcomes(events: list[dict[str, Any]]) -> list[str]:
    """Status changes (by the status they went to) and ignored notifications, in order."""
    return [
        e["data"]["to"] if e["kind"] == "status" else e["kind"]
        for e in events
        if e["kind"] in ("status", "alert_stale")
    ]


def _notifications_sent(server: AlertmanagerServer) -> float:
    """alertmanager_notifications_total of the webhook integration, from the peer's own /metrics."""
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    prefix = 'alertmanager_notifications_total{integration="webhook"}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def _targets(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(alerting.alertmanagers targets, the alertmanager job's scrape targets): the lists inside `config`."""
    (manager,) = config["alerting"]["alertmanagers"]
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "alertmanager"]
    return manager["static_configs"][0]["targets"], job["static_configs"][0]["targets"]


def test_procfile_ha_pairs_two_alertmanagers_and_points_prometheus_at_both() -> None:
    default, ha = procfile.commands(), procfile.commands(REPO / "Procfile.ha")
    assert "--config.file=config/prometheus.ha.yml" in ha["prometheus"]
    first, second = procfile.environment(ha["alertmanager"]), procfile.environment(ha["alertmanager-2"])
    assert first["ALERTMANAGER_CLUSTER_PEERS"] == second["ALERTMANAGER_CLUSTER_LISTEN"]
    assert second["ALERTMANAGER_CLUSTER_PEERS"] == first["ALERTMANAGER_CLUSTER_LISTEN"]
    assert second["ALERTMANAGER_RUN_DIR"] != ".run/alertmanager"  # the script's default, the first peer's
    listens = [first.get("ALERTMANAGER_LISTEN", "127.0.0.1:9093"), second["ALERTMANAGER_LISTEN"]]
    assert listens == _targets(yaml.safe_load((REPO / "config" / "prometheus.ha.yml").read_text()))[0]
    for command in (ha["alertmanager"], ha["alertmanager-2"]):
        assert command.endswith(default["alertmanager"])  # same script and flags, only the environment added


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h)", duration))


def test_shipped_routes_notify_less_often_than_a_peer_waits() -> None:
    """The condition of issue 11 stays out of the shipped routing: the second peer holds a notification for
    the peer timeout (15 s, not changed by Procfile.ha or compose) before its dedup check, and a shorter
    group_interval lets the first peer's next notification overtake it. The desk copes anyway."""
    route = yaml.safe_load((REPO / "config" / "alertmanager.yml").read_text())["route"]
    intervals = [
        route["group_interval"],
        *(child.get("group_interval", route["group_interval"]) for child in route["routes"]),
    ]
    assert min(_seconds(interval) for interval in intervals) > 15
    assert "peer-timeout" not in (REPO / "Procfile.ha").read_text() + (REPO / "docker-compose.yml").read_text()


@pytest.mark.integration
def test_alertmanager_script_clusters_two_peers(tmp_path: Path) -> None:
    """scripts/alertmanager.sh with the environment Procfile.ha gives, on free ports: the two peers join."""
    webs, gossips = [free_port(), free_port()], [free_port(), free_port()]
    processes = []
    try:
        for index in (0, 1):
            env = os.environ | {
                "ALERTMANAGER_RUN_DIR": str(tmp_path / f"run-{index}"),
                "ALERTMANAGER_LISTEN": f"127.0.0.1:{webs[index]}",
                "ALERTMANAGER_CLUSTER_LISTEN": f"127.0.0.1:{gossips[index]}",
                "ALERTMANAGER_CLUSTER_PEERS": f"127.0.0.1:{gossips[1 - index]}",
                "ALERTMANAGER_WEBHOOK_TOKEN": "desk-token",
            }
            processes.append(
                subprocess.Popen(
                    [str(REPO / "scripts" / "alertmanager.sh"), "--log.level=warn"],
                    env=env,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )

        def peers(port: int) -> set[str]:
            cluster = requests.get(f"http://127.0.0.1:{port}/api/v2/status", timeout=1).json()["cluster"]
            return {peer["address"] for peer in cluster["peers"]}

        expected = {f"127.0.0.1:{port}" for port in gossips}
        wait_until(lambda: all(peers(port) == expected for port in webs), timeout=20)
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)
