"""backups/local_s3.py: the local S3 of `make up` and compose, on the real weed the tests' SeaweedS3Server runs."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from cryptography import x509

from backups.local_s3 import PORTS, Certificates, from_settings
from backups.settings import ENV_PREFIX, BackupSettings, validate
from service_kit.config import load_settings
from tests.servers import SeaweedS3Server

REPO = Path(__file__).resolve().parents[2]


def client_certificate_required(port: int, ca_file: Path) -> bool:
    """A TLS handshake without a client certificate is refused (weed's gRPC ports under mutual TLS)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # TLS 1.3 refuses after the handshake
            tls.recv(1)
    except ssl.SSLError as exc:
        return "CERTIFICATE_REQUIRED" in str(exc)
    return False


@pytest.mark.integration
def test_weeds_own_ports_refuse_whoever_lacks_a_jwt_or_a_client_certificate(s3_server: SeaweedS3Server) -> None:
    """Behind the S3 API (signed requests only), weed's own ports would reach the backups without any key:
    unguarded, the master deletes a bucket's volumes on one GET. Its HTTP APIs are off, the volume server
    wants a JWT, gRPC a client certificate; the bucket is whole afterwards."""
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_server.bucket, Key="tests/local-s3/canary", Body=b"still here")
    http = s3_server.ports
    collection = f"/col/delete?collection={s3_server.bucket}"
    assert requests.get(f"http://127.0.0.1:{http['master.port']}{collection}", timeout=5).status_code == 404
    assert requests.get(f"http://127.0.0.1:{http['master.port']}/dir/assign", timeout=5).status_code == 404
    filer = f"http://127.0.0.1:{http['filer.port']}/buckets/{s3_server.bucket}/tests/local-s3/canary"
    assert requests.get(filer, timeout=5).status_code == 404
    assert requests.put(filer, data=b"overwritten", timeout=5).status_code == 404
    assert requests.get(f"http://127.0.0.1:{http['volume.port']}/1,01", timeout=5).status_code == 401
    assert requests.get(f"http://127.0.0.1:{http['s3.port']}/{s3_server.bucket}", timeout=5).status_code == 403
    grpc = [name for name in PORTS if name.endswith(".grpc")]
    assert {name: client_certificate_required(http[name], s3_server.tls.ca_file) for name in grpc} == dict.fromkeys(
        grpc, True
    )
    body = s3.get_object(Bucket=s3_server.bucket, Key="tests/local-s3/canary")["Body"].read()
    assert body == b"still here"


def fingerprints(certificates: Certificates) -> list[bytes]:
    return [path.read_bytes() for path in (certificates.ca_file, certificates.cert_file, certificates.grpc_cert_file)]


def test_certificates_are_kept_while_current_and_made_anew_for_other_hosts_or_a_ca_not_theirs(tmp_path: Path) -> None:
    """`make up` keeps its CA across runs (clients configured with it go on working); a new host name, or a
    CA file from another set (compose keeps it in a volume of its own), makes a whole new set."""
    certificates = Certificates(tmp_path / "s3", tmp_path / "ca" / "ca.pem")
    certificates.ensure(["127.0.0.1", "localhost"])
    first = fingerprints(certificates)
    certificates.ensure(["127.0.0.1", "localhost"])
    assert fingerprints(certificates) == first
    server = x509.load_pem_x509_certificate(certificates.cert_file.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["127.0.0.1", "localhost"]  # pgBackRest matches DNS names
    assert {oct(path.stat().st_mode & 0o777) for path in (certificates.key_file, certificates.grpc_key_file)} == {
        "0o600"
    }
    assert oct(certificates.ca_file.stat().st_mode & 0o777) == "0o644"  # pgBackRest reads it as postgres

    certificates.ensure(["seaweedfs", "127.0.0.1", "localhost"])
    second = fingerprints(certificates)
    assert all(a != b for a, b in zip(first, second, strict=True))

    other = Certificates(tmp_path / "other", tmp_path / "other" / "ca.pem")
    other.ensure(["seaweedfs", "127.0.0.1", "localhost"])
    certificates.ca_file.write_bytes(other.ca_file.read_bytes())
    assert not certificates.current(["seaweedfs", "127.0.0.1", "localhost"])
    certificates.ensure(["seaweedfs", "127.0.0.1", "localhost"])
    server = x509.load_pem_x509_certificate(certificates.cert_file.read_bytes())
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(certificates.ca_file.read_bytes()))


def shipped_settings(name: str, environ: dict[str, str] | None = None) -> BackupSettings:
    path = REPO / "config" / name
    keys = {f"{ENV_PREFIX}_S3__ACCESS_KEY": "key", f"{ENV_PREFIX}_S3__SECRET_KEY": "secret"}
    return validate(load_settings(BackupSettings, path, ENV_PREFIX, {**keys, **(environ or {})}), str(path))


def test_make_ups_config_replicates_the_desk_and_flags_to_the_local_s3_on_loopback() -> None:
    """config/backups.yml: the two SQLite files `make up` creates, the S3 `python -m backups.local_s3` serves
    from the same settings (its CA where the tool looks for it), and no key in the file."""
    settings = shipped_settings("backups.yml")
    assert {name: store.path for name, store in settings.sqlite.items()} == {
        "tickets": ".run/tickets.sqlite3",
        "flags": ".run/flags.sqlite3",
    }
    for config in ("tickets.yml", "flags.yml"):
        database = yaml.safe_load((REPO / "config" / config).read_text())["database"]["url"]
        assert database.removeprefix("sqlite:///") in {store.path for store in settings.sqlite.values()}
    assert settings.server.host == "127.0.0.1" and settings.server.port == 9104
    server = from_settings(settings, None, "127.0.0.1")
    assert server.ca_file == Path(settings.s3.ca_file).absolute()
    assert server.directory == server.ca_file.parent
    assert (server.hosts[0], server.https_port, server.bucket) == ("127.0.0.1", 8333, settings.s3.bucket)
    assert settings.s3.uri_style == "path"
    text = (REPO / "config" / "backups.yml").read_text()
    assert "access_key" not in text and "secret_key" not in text


@pytest.mark.integration
def test_wait_returns_once_the_s3_answers_and_every_store_file_exists(
    s3_server: SeaweedS3Server, tmp_path: Path
) -> None:
    """What the replicator and the jobs wait for in the Procfile: without the file it keeps waiting (an exit
    would stop every process honcho runs), then it exits 0."""
    store = tmp_path / "tickets.sqlite3"
    config = {
        "s3": {"endpoint": "127.0.0.1", "port": s3_server.port, "bucket": s3_server.bucket, "uri_style": "path",
               "ca_file": str(s3_server.tls.ca_file)},
        "sqlite": {"tickets": {"path": str(store)}},
    }  # fmt: skip
    (tmp_path / "backups.yml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "VIBELUX_BACKUP_CONFIG": str(tmp_path / "backups.yml"),
        f"{ENV_PREFIX}_S3__ACCESS_KEY": s3_server.access_key,
        f"{ENV_PREFIX}_S3__SECRET_KEY": s3_server.secret_key,
    }
    waiting = subprocess.Popen([sys.executable, "-m", "backups.local_s3", "--wait"], env=env, cwd=REPO)
    try:
        time.sleep(2)
        assert waiting.poll() is None
        store.touch()
        assert waiting.wait(15) == 0
    finally:
        waiting.kill()
        waiting.wait()
