"""Two service processes on one database: a change reaches the other within a second through Redis,
and while Redis is down the other keeps serving and still picks the change up from the database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

from flags_service.settings import FlagsSettings
from tests.flags.conftest import SdkKeys
from tests.servers import RedisServer, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def second_replica(settings: FlagsSettings, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "VIBELUX_FLAGS_CONFIG": str(tmp_path / "none.yml"),
        "FLAGS_DATABASE__URL": settings.database.url,
        "FLAGS_REDIS__URL": settings.redis.url,
        "FLAGS_REDIS__SOCKET_TIMEOUT_SECONDS": "0.3",
        "FLAGS_SERVER__PORT": str(port),
        "FLAGS_SERVER__WORKERS": "1",
        "FLAGS_FLAGS__DB_POLL_SECONDS": "0.2",
        "FLAGS_LOGGING__LEVEL": "WARNING",
        "VIBELUX_RUN_DIR": str(tmp_path / "run"),
    }
    (tmp_path / "none.yml").write_text("{}\n")
    log = (tmp_path / "replica.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "flags_service.cli", "serve"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/healthz", timeout=1).status_code == 200, timeout=30)
        yield url
    finally:
        process.terminate()
        process.wait(15)


def _reason(url: str, token: str) -> str:
    response = requests.post(
        f"{url}/ofrep/v1/evaluate/flags/kill-switch",
        json={"context": {"targetingKey": "u1"}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=2,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["reason"])


def _seconds_until(predicate: Callable[[], bool], limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"not seen within {limit}s")


@pytest.mark.integration
def test_change_reaches_second_process_within_a_second_and_survives_redis_down(
    client: FlaskClient,
    admin: dict[str, str],
    sdk_keys: SdkKeys,
    create_flag: Callable,
    second_replica: str,
    redis_server: RedisServer,
) -> None:
    create_flag("kill-switch", kind="ops", environments={"production": {"fallthrough": {"variant": "on"}}})
    assert _reason(second_replica, sdk_keys.server) == "DISABLED"

    client.post("/api/v1/flags/kill-switch/environments/production/toggle", json={"enabled": True}, headers=admin)
    assert _seconds_until(lambda: _reason(second_replica, sdk_keys.server) == "STATIC", 1.0) < 1.0

    redis_server.stop()
    try:
        response = client.post("/api/v1/flags/kill-switch/environments/production/toggle", json={}, headers=admin)
        assert response.status_code == 200  # writes do not need Redis
        seconds = _seconds_until(lambda: _reason(second_replica, sdk_keys.server) == "DISABLED", 3.0)
        assert seconds < 3.0
    finally:
        redis_server.start()
    # Redis back: the replica resubscribes and follows pub/sub again.
    wait_until(lambda: _reason(second_replica, sdk_keys.server) == "DISABLED", timeout=5)
    time.sleep(1.5)
    client.post("/api/v1/flags/kill-switch/environments/production/toggle", json={}, headers=admin)
    assert _seconds_until(lambda: _reason(second_replica, sdk_keys.server) == "STATIC", 1.0) < 1.0
