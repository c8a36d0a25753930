from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.alerts.helpers import alertmanager_config
from tests.servers import AlertmanagerServer


@pytest.fixture(scope="session")
def alertmanager() -> Iterator[AlertmanagerServer]:
    """A real Alertmanager running config/alertmanager.yml (its receivers have nowhere to deliver)."""
    server = AlertmanagerServer(alertmanager_config())
    server.start()
    yield server
    server.close()
