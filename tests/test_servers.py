"""The test harness's own promise that parallel workers (``make test`` runs pytest-xdist) never share a port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import free_port_with

REPO = Path(__file__).resolve().parents[1]
HAND_OUT = (
    "from tests.servers import free_port, free_port_with; "
    "print(*[free_port() for _ in range(400)], free_port_with(10000))"
)


def ports_of_worker(index: int, count: int) -> set[int]:
    environment = {"PYTEST_XDIST_WORKER": f"gw{index}", "PYTEST_XDIST_WORKER_COUNT": str(count)}
    done = subprocess.run(
        [sys.executable, "-c", HAND_OUT], capture_output=True, text=True, check=True, env=environment, cwd=REPO
    )
    return {int(port) for port in done.stdout.split()}


def test_two_workers_hand_out_disjoint_ports_though_the_kernel_gives_bind_0_odd_ports() -> None:
    first, second = ports_of_worker(0, 2), ports_of_worker(1, 2)
    assert len(first) == len(second) == 401
    assert not first & second


def test_an_offset_that_would_cross_into_another_workers_share_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    with pytest.raises(ValueError, match="offset 10002"):
        free_port_with(10002)
