"""Real servers for tests: redis-server, prometheus, prometheus-alertmanager, PostgreSQL, an S3 object store
(SeaweedFS over TLS), the backup tool (serve and replicate), a Sentry envelope sink, and sinks for what
Alertmanager delivers (HTTP and SMTP).

Each runs on a free loopback port with its own temporary directory, is waited on until it answers, and is
stopped (and its directory removed) at the end.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import gzip
import json
import os
import shutil
import signal
import socket
import socketserver
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
import yaml
from werkzeug.serving import make_server

from backups.local_s3 import GRPC_OFFSET, PORTS, LocalS3

_HANDED_OUT: set[int] = set()
_HANDING_OUT = threading.Lock()  # servers may be built from several threads (tests/alerts/stack.py)


def _worker_share() -> tuple[int, int]:
    """(this pytest-xdist worker's index, the number of workers); (0, 1) when the suite runs in one process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return (int(worker.removeprefix("gw")), count) if worker.startswith("gw") else (0, 1)


def free_port() -> int:
    """A loopback port free now and not handed out before in this process: the kernel may give the port
    just closed to the next bind(0), so two servers built in a row could otherwise get the same one (seen:
    an Alertmanager whose port a Prometheus replica had taken answered 404 to /api/v2/alerts). Under
    pytest-xdist each worker takes only its share of the ports (bind(0) hands out odd ports, so the share
    is by port // 2), so two workers never hand out the same port, even while one lies closed between this
    check and its server's bind."""
    index, count = _worker_share()
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if (port // 2) % count != index:
            continue
        with _HANDING_OUT:
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """A WSGI ``app`` on a real threaded HTTP server on a free loopback port; yields its base URL."""
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(5)


def free_port_with(offset: int) -> int:
    """A free port whose port + ``offset`` is free too (a server that derives a second port from the first).
    Both lie in this worker's share of ports, so ``offset`` must be a multiple of twice the number of workers."""
    _, count = _worker_share()
    if offset % (2 * count):
        raise ValueError(f"port offset {offset} is not a multiple of twice the {count} pytest-xdist workers")
    while True:
        port = free_port()
        if port + offset >= 65536:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        with _HANDING_OUT:
            if port + offset not in _HANDED_OUT:
                _HANDED_OUT.add(port + offset)
                return port


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, requests.RequestException):
            pass
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class ManagedProcess:
    """A server process started from ``command()``; ``stop``/``start`` keep the same port."""

    name = "server"
    start_timeout = 60.0  # seconds until ready(): a loaded 2-core machine took over 15 s to start granian servers

    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"vibelux-{self.name}-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "server.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return port_open(self.port)

    def environment(self) -> dict[str, str]:
        """Variables added to the inherited environment of the process."""
        return {}

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            env={**os.environ, **self.environment()},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self.ready, timeout=self.start_timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} did not start:\n{self.log_path.read_text()[-2000:]}") from None
        except BaseException:  # a failed readiness check, pytest-timeout: nobody else knows of the process yet
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class RedisServer(ManagedProcess):
    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]

    def ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def flush(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "FLUSHALL"], check=True, capture_output=True)


class PrometheusServer(ManagedProcess):
    """Prometheus with the given configuration (a dict) and rule files copied beside it."""

    name = "prometheus"

    def __init__(self, config: dict[str, Any], rule_files: list[Path] | None = None) -> None:
        super().__init__()
        for rule_file in rule_files or []:
            shutil.copy(rule_file, self.workdir / rule_file.name)
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            "prometheus",
            f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--web.external-url={self.url}",  # as the stack runs it: alerts' source links point here
            "--web.enable-lifecycle",
        ]

    def ready(self) -> bool:
        return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


class AlertmanagerServer(ManagedProcess):
    """`cluster_args` (e.g. --cluster.listen-address=..., --cluster.peer=...) make it one peer of a cluster;
    without them clustering is off, as the one-machine stack runs it."""

    name = "alertmanager"

    def __init__(self, config: dict[str, Any] | str, cluster_args: list[str] | None = None) -> None:
        super().__init__()
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        (self.workdir / "alertmanager.yml").write_text(text)
        self.cluster_args = cluster_args or ["--cluster.listen-address="]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            "prometheus-alertmanager",
            f"--config.file={self.workdir / 'alertmanager.yml'}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--web.external-url={self.url}",  # as the stack runs it: notifications' silence links point here
            *self.cluster_args,
        ]

    def ready(self) -> bool:
        return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200


class PostgresServer(ManagedProcess):
    """A throwaway PostgreSQL cluster (Debian's binaries) on a free port, trust auth on 127.0.0.1 only.

    initdb and postgres refuse to run as root, so under root they run as the ``postgres`` system user.
    """

    name = "postgres"

    def __init__(self) -> None:
        super().__init__()
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        assert binaries, "postgresql is a system dependency (scripts/system-deps.sh)"
        self.bindir = binaries[-1]
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.workdir, self.user)
        self.databases_created = 0

    @property
    def url(self) -> str:
        """The ``postgres`` database as the superuser."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def command(self) -> list[str]:
        return [
            str(self.bindir / "postgres"), "-D", str(self.workdir / "data"), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-k", str(self.workdir), "-c", "fsync=off",
            # query insights (tests/exporters/test_query_insights.py): counts in shared memory, read through the
            # view a test's CREATE EXTENSION adds to its own database
            "-c", "shared_preload_libraries=pg_stat_statements", "-c", "pg_stat_statements.max=20000",
        ]  # fmt: skip

    def start(self) -> None:
        if not (self.workdir / "data").exists():
            subprocess.run(
                [str(self.bindir / "initdb"), "-D", str(self.workdir / "data"), "-U", "postgres", "--auth=trust",
                 "--no-sync"],
                check=True, capture_output=True, user=self.user,
            )  # fmt: skip
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=self.user
        )
        wait_until(self.ready, timeout=30)

    def ready(self) -> bool:
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.url)
        try:
            with engine.connect() as connection:
                return bool(connection.execute(sqlalchemy.text("SELECT 1")).scalar() == 1)
        except sqlalchemy.exc.OperationalError:
            return False
        finally:
            engine.dispose()

    def fresh_database(self, prefix: str) -> str:
        """A new, empty database (a new name each time: an earlier test's pool may still be connected)."""
        import sqlalchemy

        self.databases_created += 1
        name = f"{prefix}_{self.databases_created}"
        engine = sqlalchemy.create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: disconnects the tests' pooled connections
            self.process.wait(15)
        self.process = None


class SentrySink:
    """Receives what the real sentry-sdk sends to ``http://key@127.0.0.1:PORT/1``: envelopes, maybe gzipped."""

    def __init__(self) -> None:
        self.envelopes: list[list[dict[str, Any]]] = []
        self.raw_bodies: list[bytes] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding == "br":
                    import brotli  # type: ignore[import-not-found]  # only if the SDK chose brotli

                    body = brotli.decompress(body)
                with sink._lock:
                    sink.raw_bodies.append(body)
                    sink.envelopes.append(_parse_envelope(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/1"

    def events(self) -> list[dict[str, Any]]:
        """Payloads of ``event`` items (errors and messages)."""
        with self._lock:
            return [item for envelope in self.envelopes for item in envelope if item.get("_type") == "event"]

    def all_text(self) -> str:
        with self._lock:
            return b"\n".join(self.raw_bodies).decode("utf-8", "replace")

    def clear(self) -> None:
        with self._lock:
            self.envelopes.clear()
            self.raw_bodies.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HttpSink:
    """Records every POST with a JSON body (a Slack incoming webhook, PagerDuty's events API) and answers 200."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with sink._lock:
                    sink.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "success"}')  # Slack answers "ok", PagerDuty this; both suffice

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[Any]:
        with self._lock:
            return [body for got, body in self.received if got == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """A plain SMTP server on loopback that keeps each message (no TLS, no AUTH offered: Go's SMTP client, as
    Alertmanager uses it, then sends without authenticating)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(f"{line}\r\n".encode())

            def handle(self) -> None:
                self.reply("220 sink ESMTP")
                while line := self.rfile.readline():
                    verb = line.decode("ascii", "replace").strip().split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        self.reply("250-sink")
                        self.reply("250 8BITMIME")
                    elif verb == "DATA":
                        self.reply("354 end with <CRLF>.<CRLF>")
                        data = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data += chunk[1:] if chunk.startswith(b"..") else chunk
                        with sink._lock:
                            sink.messages.append(data)
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:  # HELO, MAIL, RCPT, RSET, NOOP
                        self.reply("250 ok")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self) -> list[email.message.EmailMessage]:
        with self._lock:
            raw = list(self.messages)
        return [email.message_from_bytes(data, policy=email.policy.default) for data in raw]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _parse_envelope(body: bytes) -> list[dict[str, Any]]:
    """Envelope = header line, then (item header line, payload line) pairs; payload tagged with its type."""
    lines = body.split(b"\n")
    items: list[dict[str, Any]] = []
    index = 1
    while index < len(lines) and lines[index].strip():
        header = json.loads(lines[index])
        payload_line = lines[index + 1] if index + 1 < len(lines) else b"{}"
        try:
            payload = json.loads(payload_line)
        except ValueError:
            payload = {"_raw": payload_line.decode("utf-8", "replace")}
        if isinstance(payload, dict):
            payload["_type"] = header.get("type")
            items.append(payload)
        index += 2
    return items


class VictoriaMetricsServer(ManagedProcess):
    """VictoriaMetrics single-node: Prometheus remote_write in at /api/v1/write, the Prometheus query API out.

    `dedup_interval` is -dedup.minScrapeInterval. Unlike a deployment it answers with what it has at once:
    no -search.latencyOffset (by default queries do not see the last 30 s) and no response cache, so a test
    can query data the moment it is written.
    """

    name = "victoriametrics"

    def __init__(self, dedup_interval: str) -> None:
        super().__init__()
        self.dedup_interval = dedup_interval

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            "victoria-metrics",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.workdir / 'data'}",
            f"-dedup.minScrapeInterval={self.dedup_interval}",
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ]

    def ready(self) -> bool:
        return requests.get(f"{self.url}/health", timeout=1).status_code == 200


class SeaweedS3Server(ManagedProcess):
    """SeaweedFS ``weed mini`` as `make up` runs it (backups/local_s3.py: HTTPS with a CA made for it, weed's
    own ports behind JWT and mutual TLS), one bucket and one access key, with every port a free one on
    loopback: gRPC ports too, whose defaults (the HTTP port + 10000) would collide between sessions.
    """

    name = "seaweedfs"
    start_timeout = 60.0
    bucket = "vibelux-backups"
    access_key = "vibelux-test-access"
    secret_key = "vibelux-test-secret-key"  # test-only credentials of a throwaway server

    def __init__(self) -> None:
        super().__init__()
        self.workdir.chmod(0o755)  # the CA file inside must be readable by the postgres user
        ports = {name: free_port() for name in PORTS if not name.startswith("admin.")}
        ports["admin.port"] = free_port_with(GRPC_OFFSET)  # weed's worker dials the admin there
        ports["admin.port.grpc"] = ports["admin.port"] + GRPC_OFFSET
        self.local = LocalS3(self.workdir, self.workdir / "ca.pem", ("127.0.0.1", "localhost"), self.port,
                             self.bucket, ports)  # fmt: skip
        self.local.prepare(self.access_key, self.secret_key, days=2)
        self.tls = self.local.certificates
        self.ports = {**self.local.ports, "s3.port.https": self.port}

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return self.local.command()

    def ready(self) -> bool:
        """The bucket answers a signed request (the S3 gateway starts after the filer and the bucket)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client().head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError):
            return False
        return True

    def close(self) -> None:
        """Also the unix sockets weed leaves in /tmp (a fixed directory, named after our ports)."""
        super().close()
        for port in self.ports.values():
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)

    def client(self) -> Any:
        """A boto3 S3 client trusting the test CA: what a test uses to look at or damage the objects."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1", verify=str(self.tls.ca_file),
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2),
        )  # fmt: skip


class BackupServer(ManagedProcess):
    """`vibelux-backup serve` (/metrics, the sync and drill jobs) and `vibelux-backup replicate` beside it, as
    `make up` runs them: config/backups.yml with its SQLite stores replaced by ``stores`` (name -> database
    file, which must exist) and the object store by ``s3`` (a prefix of this server's own). Ready once each
    store has a recorded backup and drill (the jobs run at first start), so a scrape sees every series."""

    name = "backup"
    start_timeout = 120.0  # two jobs per store, each waiting for Litestream, on a busy machine

    def __init__(self, s3: SeaweedS3Server, stores: dict[str, Path]) -> None:
        super().__init__()
        self.stores = stores
        config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "backups.yml").read_text())
        config["server"]["port"] = self.port
        config["database"]["url"] = f"sqlite:///{self.workdir / 'backups.sqlite3'}"
        config["work_dir"] = str(self.workdir / "work")
        config["s3"].update(port=s3.port, ca_file=str(s3.tls.ca_file), prefix=f"/tests/backup-{self.port}")
        config["sqlite"] = {name: {"path": str(path)} for name, path in stores.items()}
        for section in ("redis", "files"):  # the stack's Redis and attachments are not these tests' servers
            config.pop(section, None)
        (self.workdir / "backups.yml").write_text(yaml.safe_dump(config))
        self.keys = {"BACKUP_S3__ACCESS_KEY": s3.access_key, "BACKUP_S3__SECRET_KEY": s3.secret_key}
        self.replicator: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).with_name("vibelux-backup")), *args]

    def environment(self) -> dict[str, str]:
        return {
            "VIBELUX_BACKUP_CONFIG": str(self.workdir / "backups.yml"),
            "VIBELUX_RUN_DIR": str(self.workdir / "run"),
            "BACKUP_LOGGING__LEVEL": "WARNING",
            **self.keys,
        }

    def command(self) -> list[str]:
        return self.cli("serve")

    def start(self) -> None:
        log = (self.workdir / "replicate.log").open("ab")
        self.replicator = subprocess.Popen(
            self.cli("replicate"), cwd=self.workdir, env={**os.environ, **self.environment()}, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        super().start()  # stops the replicator too when the server does not come up (stop() below)

    def ready(self) -> bool:
        """A successful sync and drill recorded for every store (read from the tool's database: each scrape
        of /metrics lists the replica, too costly to poll); a failed run fails the start with its reason."""
        try:
            with sqlite3.connect(self.workdir / "backups.sqlite3") as database:
                runs = database.execute("SELECT store, kind, ok, detail FROM backup_runs").fetchall()
        except sqlite3.OperationalError:
            return False  # not created yet
        if failed := [f"{store} {kind}: {detail}" for store, kind, ok, detail in runs if not ok]:
            raise RuntimeError(f"backup runs failed: {failed}")
        done = {(store, kind) for store, kind, _ok, _detail in runs}
        wanted = {(store, kind) for store in self.stores for kind in ("sync", "drill")}
        return wanted <= done and requests.get(f"{self.url}/healthz", timeout=2).status_code == 200

    def stop(self) -> None:
        super().stop()
        if self.replicator is not None and self.replicator.poll() is None:
            self.replicator.terminate()
            self.replicator.wait(30)
        self.replicator = None
