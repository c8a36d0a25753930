"""What the three exporters share at run time: the server section of their config and the serve loop.

Exporters serve from one process with prometheus-client's threaded HTTP server and a private registry:
their custom collectors cannot run in the multiprocess mode the Flask services use, and a scrape only
reads memory (or psutil, for the infra exporter), so one process is enough.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CollectorRegistry, Info, start_http_server

from exporters.config import ConfigError, field_of, section_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int


def server_settings(data: Mapping[str, Any], file: str, default_port: int) -> ServerSettings:
    section = section_of(data, "server", file)
    port = field_of(section, "port", int, file, "server", default=default_port)
    if not 0 < port < 65536:
        raise ConfigError("server.port", file, f"a port number 1-65535, got {port}")
    return ServerSettings(field_of(section, "host", str, file, "server", default="127.0.0.1"), port)


def config_path(argv: Sequence[str] | None, exporter: str) -> str:
    """--config PATH, else $VIBELUX_<EXPORTER>_EXPORTER_CONFIG, else config/exporters/<exporter>.yml."""
    parser = argparse.ArgumentParser(prog=f"vibelux-exporter-{exporter}")
    variable = f"VIBELUX_{exporter.upper()}_EXPORTER_CONFIG"
    default = os.environ.get(variable, f"config/exporters/{exporter}.yml")
    parser.add_argument("--config", default=default, help=f"YAML config (default: {default})")
    return str(parser.parse_args(argv).config)


def register_build_info(registry: CollectorRegistry, exporter: str) -> None:
    """vibelux_build_info{service,version,python}, as every part of the stack publishes it."""
    try:
        package_version = version("vibelux-ops")
    except PackageNotFoundError:
        package_version = "unknown"
    info = Info(
        "vibelux_build", "Build of this component.", ["service", "version", "python"], registry=registry
    )
    info.labels(f"exporter-{exporter}", package_version, sys.version.split()[0]).info({})


def serve(
    registry: CollectorRegistry,
    server: ServerSettings,
    start: Callable[[], None] = lambda: None,
    stop: Callable[[], None] = lambda: None,
) -> None:
    """Serve /metrics until SIGINT or SIGTERM; `start` and `stop` bracket the exporter's background jobs."""
    httpd, _thread = start_http_server(server.port, server.host, registry)
    log.info("serving metrics on http://%s:%d/metrics", server.host, server.port)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    start()
    try:
        done.wait()
    finally:
        stop()
        httpd.shutdown()
        httpd.server_close()


def run_cli(main: Callable[[], None]) -> int:
    """Run an exporter's main: a ConfigError becomes one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        main()
    except ConfigError as error:
        sys.stderr.write(f"config error: {error}\n")
        return 2
    return 0
