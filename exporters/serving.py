"""What the three exporters share at run time: the server section of their config and the serve loop.

Exporters serve from one process with prometheus-client's threaded HTTP server and a private registry:
their custom collectors cannot run in the multiprocess mode the Flask services use, and a scrape only
reads memory (or psutil, for the infra exporter), so one process is enough.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, make_server

import click
from prometheus_client import CollectorRegistry, Info, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from service_kit import cli as kit_cli
from service_kit.config import checked, load_settings, port_check
from service_kit.index import EXPORTER_PATHS, ServiceDocs, build_index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExporterServerSettings:
    host: str = "127.0.0.1"
    port: int = checked(9100, port_check)


class ExporterSettings(Protocol):
    @property
    def server(self) -> ExporterServerSettings: ...

    def validate(self, source: str) -> None: ...


S = TypeVar("S", bound=ExporterSettings)


class Exporter(NamedTuple):
    """What `serve` runs: the registry to expose, the background work around it, and readiness
    (True once every probe or query has run at least once, so /readyz says when numbers are real)."""

    registry: CollectorRegistry
    start: Callable[[], None] = lambda: None
    stop: Callable[[], None] = lambda: None
    ready: Callable[[], bool] = lambda: True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the exporter's own log."""


def exporter_app(exporter: Exporter, name: str, docs: ServiceDocs) -> Callable[..., Iterable[bytes]]:
    """WSGI app: /metrics (the registry), /healthz (the process answers), /readyz (first results are in);
    the same health endpoints as the services (service_kit.health), so `make up` checks all alike. `/` is
    the kit's index linking them, as node_exporter's landing page links its /metrics."""
    metrics = make_wsgi_app(exporter.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path in ("/healthz", "/readyz"):
            ok = path == "/healthz" or exporter.ready()
            body = json.dumps({"status": "ok" if ok else "fail", "service": f"exporter-{name}"}).encode()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
            return [body]
        if path == "/":
            index = build_index(f"exporter-{name}", docs, EXPORTER_PATHS)
            body, content_type = index.response(environ.get("HTTP_ACCEPT", ""))
            start_response("200 OK", [("Content-Type", content_type), ("Vary", "Accept")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: see /metrics, /healthz, /readyz\n"]

    return app


def register_build_info(registry: CollectorRegistry, exporter: str) -> None:
    """vibelux_build_info{service,version,python}, as every part of the stack publishes it."""
    try:
        package_version = version("vibelux-ops")
    except PackageNotFoundError:
        package_version = "unknown"
    info = Info("vibelux_build", "Build of this component.", ["service", "version", "python"], registry=registry)
    info.labels(f"exporter-{exporter}", package_version, sys.version.split()[0]).info({})


def serve(exporter: Exporter, server: ExporterServerSettings, name: str, docs: ServiceDocs) -> None:
    """Serve until SIGINT or SIGTERM, with the exporter's background jobs running meanwhile."""
    app = exporter_app(exporter, name, docs)
    httpd = make_server(server.host, server.port, app, ThreadingWSGIServer, QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    log.info("serving metrics on http://%s:%d/metrics", server.host, server.port)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    exporter.start()
    try:
        done.wait()
    finally:
        exporter.stop()
        httpd.shutdown()
        httpd.server_close()


def exporter_cli(
    name: str,
    settings_cls: type[S],
    env_prefix: str,
    build: Callable[[S], Exporter],
    docs: ServiceDocs,
    add_commands: Callable[[click.Group, Callable[[], S]], None] | None = None,
) -> Callable[..., Any]:
    """`vibelux-exporter-<name>` with `serve`, `check-config` and `config env`, like the services' CLIs;
    `add_commands(group, load)` adds an exporter's own.

    The config file is --config, else $VIBELUX_EXPORTER_<NAME>_CONFIG, else config/exporters/<name>.yml.
    A bad config ends any command with one line on stderr and exit code 2 (service_kit.cli.run).
    """
    state: dict[str, Path | None] = {}

    def load() -> S:
        path = state["path"]
        settings = load_settings(settings_cls, path, env_prefix)
        settings.validate(str(path) if path else "<defaults>")
        return settings

    @click.group(help=f"VibeLux Ops {name} exporter.")
    @click.option("--config", "config", type=click.Path(path_type=Path), default=None, help="YAML config file.")
    def group(config: Path | None) -> None:
        state["path"] = config or kit_cli.config_path(f"exporter_{name}", f"config/exporters/{name}.yml")

    @group.command("serve", help="Serve /metrics until SIGINT or SIGTERM.")
    def serve_command() -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        settings = load()
        exporter = build(settings)
        register_build_info(exporter.registry, name)
        serve(exporter, settings.server, name, docs)

    kit_cli.add_config_commands(group, load, settings_cls, env_prefix)
    if add_commands is not None:
        add_commands(group, load)

    def main(argv: list[str] | None = None) -> None:
        kit_cli.run(group, argv)

    return main
