from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerts.servers import Server, alertmanager_config, run_alertmanager


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real Alertmanager running config/alertmanager.yml (its receivers fail quietly: nothing listens)."""
    workdir: Path = tmp_path_factory.mktemp("alertmanager")
    with run_alertmanager(workdir, alertmanager_config()) as server:
        yield server
