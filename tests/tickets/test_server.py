"""The desk under granian with two workers: concurrent replies lose nothing; metrics agree across workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy.orm import Session

from service_kit.auth import create_token
from service_kit.config import load_settings
from service_kit.db import make_engine
from tests.servers import ManagedProcess, wait_until
from tickets_app.cli import migrate
from tickets_app.settings import TicketsSettings


class DeskServer(ManagedProcess):
    """The desk as users run it (`vibelux-tickets serve`: granian, two workers) on a SQLite database;
    `settings` are further TICKETS_* variables."""

    name = "tickets"

    def __init__(self, **settings: str) -> None:
        super().__init__()
        self.database_url = f"sqlite:///{self.workdir / 'tickets.sqlite3'}"
        self.settings = settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tickets_app.cli", "serve"]

    def ready(self) -> bool:
        return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200

    def environment(self) -> dict[str, str]:
        (self.workdir / "none.yml").write_text("{}\n")
        return {
            "TICKETS_SERVER__PORT": str(self.port),
            "TICKETS_SERVER__WORKERS": "2",
            "TICKETS_DATABASE__URL": self.database_url,
            "TICKETS_ATTACHMENTS__DIRECTORY": str(self.workdir / "files"),
            "TICKETS_SLA__SWEEP_INTERVAL_SECONDS": "0",
            "TICKETS_LOGGING__LEVEL": "WARNING",
            "VIBELUX_RUN_DIR": str(self.workdir / "run"),
            "VIBELUX_TICKETS_CONFIG": str(self.workdir / "none.yml"),
            "TICKETS_RUNBOOKS__DIRECTORY": str(Path(__file__).resolve().parents[2] / "docs" / "runbooks"),
            # The server runs in its own directory; the package comes from this checkout.
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            **self.settings,
        }


@pytest.fixture(scope="module")
def server() -> Iterator[DeskServer]:
    desk = DeskServer()
    migrate(desk.database_url)
    desk.start()
    yield desk
    desk.close()


def token(server: DeskServer, role: str, subject: str) -> str:
    with Session(make_engine(server.database_url)) as session:
        plain, _ = create_token(session, subject, role, subject=subject)
        session.commit()
    return plain


@pytest.mark.integration
def test_concurrent_replies_lose_nothing(server: DeskServer) -> None:
    customer = {"Authorization": f"Bearer {token(server, 'customer', 'cust-c')}"}
    agent = {"Authorization": f"Bearer {token(server, 'agent', 'agent-c')}"}
    created = requests.post(
        f"{server.url}/api/v1/tickets", json={"subject": "race", "body": "start"}, headers=customer, timeout=10
    )
    assert created.status_code == 201
    url = f"{server.url}/api/v1/tickets/{created.json()['id']}"

    def reply(i: int) -> int:
        headers = agent if i % 2 else customer
        body = {"body": f"reply {i}", "internal": False} if i % 2 else {"body": f"reply {i}"}
        return requests.post(f"{url}/messages", json=body, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(reply, range(40)))
    assert statuses == [201] * 40
    thread = requests.get(url, headers=agent, timeout=10).json()["messages"]
    assert sorted(m["body"] for m in thread) == sorted(["start", *[f"reply {i}" for i in range(40)]])

    def open_tickets() -> float:
        text = requests.get(f"{server.url}/metrics", timeout=5).text
        line = next(
            line
            for line in text.splitlines()
            if line.startswith('support_tickets_open{priority="medium",status="open"}')
        )
        return float(line.rsplit(" ", 1)[1])

    wait_until(lambda: open_tickets() == 1.0, timeout=5)
    assert {open_tickets() for _ in range(6)} == {1.0}  # the same from whichever worker answers


@pytest.mark.integration
def test_bad_config_stops_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "tickets.yml"
    config.write_text("sla:\n  at_risk_minutes: -5\n")
    result = subprocess.run(
        [sys.executable, "-m", "tickets_app.cli", "check-config"],
        env={**os.environ, "VIBELUX_TICKETS_CONFIG": str(config), "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "sla.at_risk_minutes" in result.stderr


def test_settings_defaults_are_the_desks_without_a_file() -> None:
    """The desk's own section defaults (port 8081, its database) hold when no config file is given."""
    settings = load_settings(TicketsSettings, None, "TICKETS", environ={"TICKETS_SERVER__WORKERS": "3"})
    assert settings.server.port == 8081
    assert settings.server.workers == 3
    assert settings.database.url == "sqlite:///.run/tickets.sqlite3"
