from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ratelimit_proxy.servers import RedisProcess


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    yield server
    server.stop()
