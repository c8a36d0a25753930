"""Fixtures for the exporters' tests: a scriptable HTTP dependency and a silent (hung) port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from tests.exporters.helpers import DependencyHandler
from tests.servers import PostgresServer, free_port


@pytest.fixture(scope="session")
def dependency_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), DependencyHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) and never answers: a hung dependency."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.fresh_database("exporters")
