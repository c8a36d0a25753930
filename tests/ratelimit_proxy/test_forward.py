"""The upstream client against a real socket server that answers exactly the bytes each test scripts:
the HTTP framing cases a proxy meets in the wild (HEAD, 1xx, chunked, close-delimited, truncated, idle
connections the upstream closed) and the connection reuse that makes the client cheap."""

from __future__ import annotations

import datetime
import ipaddress
import os
import resource
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sentry_sdk
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask

from ratelimit_proxy.app import create_app
from ratelimit_proxy.forward import BadHeader, UpstreamError
from ratelimit_proxy.limiter import Decision
from ratelimit_proxy.limiter_storage import MemoryLimiter
from ratelimit_proxy.settings import ProxySettings
from service_kit.settings import SentrySettings
from tests.ratelimit_proxy.conftest import Script, ScriptedServer, ok
from tests.servers import RedisServer, SentrySink, wait_until


def read_all(body: bytes | Iterator[bytes]) -> bytes:
    return body if isinstance(body, bytes) else b"".join(body)


def test_keep_alive_connection_is_reused_across_requests(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda n, head: (ok(b"answer %d" % n), False))
    upstream = server.upstream()
    bodies = [read_all(upstream.send("GET", f"/r{i}", [("Host", "x")], None).body) for i in range(1, 6)]
    assert bodies == [b"answer %d" % i for i in range(1, 6)]
    assert server.connections == 1


def test_head_response_has_no_body_whatever_its_content_length(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(
        lambda n, head: (b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", False) if n == 1 else (ok(), False)
    )
    upstream = server.upstream()
    answer = upstream.send("HEAD", "/", [], None)
    assert (answer.status, answer.body) == (200, b"")
    assert ("Content-Length", "1234") in answer.headers
    assert read_all(upstream.send("GET", "/", [], None).body) == b"hello"  # same connection, framing intact
    assert server.connections == 1


def test_interim_1xx_responses_are_skipped(serve: Callable[[Script], ScriptedServer]) -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    server = serve(lambda n, head: (early + ok(b"final", b"X-Final: yes\r\n"), False))
    answer = server.upstream().send("GET", "/", [], None)
    assert (answer.status, answer.reason, read_all(answer.body)) == (200, "OK", b"final")
    assert [name for name, _ in answer.headers] == ["Content-Length", "X-Final"]


def test_large_chunked_response_streams_and_the_connection_is_reused(serve: Callable[[Script], ScriptedServer]) -> None:
    piece = b"x" * 50_000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(8)) + b"0\r\n\r\n"
    big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    server = serve(lambda n, head: (big if n == 1 else ok(), False))
    upstream = server.upstream()
    answer = upstream.send("GET", "/big", [], None)
    assert not isinstance(answer.body, bytes)  # streamed, not buffered
    assert read_all(answer.body) == piece * 8
    assert all(name.lower() != "transfer-encoding" for name, _ in answer.headers)  # hop-by-hop
    assert read_all(upstream.send("GET", "/", [], None).body) == b"hello"
    assert server.connections == 1


def test_body_delimited_by_close_is_read_to_the_end(serve: Callable[[Script], ScriptedServer]) -> None:
    body = b"y" * 200_000
    server = serve(lambda n, head: (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body, True))
    assert read_all(server.upstream().send("GET", "/", [], None).body) == body


def test_truncated_body_is_an_error_not_a_shorter_body(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda n, head: (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"z" * 40, True))
    with pytest.raises(UpstreamError, match="mid-body"):
        server.upstream().send("GET", "/", [], None)
    big = serve(lambda n, head: (b"HTTP/1.1 200 OK\r\nContent-Length: 900000\r\n\r\n" + b"z" * 70_000, True))
    answer = big.upstream().send("GET", "/", [], None)
    with pytest.raises(UpstreamError, match="mid-body"):
        read_all(answer.body)


def test_idle_connection_closed_by_upstream_is_replaced(serve: Callable[[Script], ScriptedServer]) -> None:
    # The upstream answers, then closes the connection without saying so (a keep-alive timeout).
    server = serve(lambda n, head: (ok(b"answer %d" % n), True))
    upstream = server.upstream()
    assert read_all(upstream.send("GET", "/", [], None).body) == b"answer 1"
    wait_until(lambda: server.connections == 1)
    assert read_all(upstream.send("GET", "/", [], None).body) == b"answer 2"
    assert server.connections == 2


def test_reused_connection_that_dies_unanswered_is_retried_only_when_safe(
    serve: Callable[[Script], ScriptedServer],
) -> None:
    # The second request on a connection gets no answer at all: the upstream closed it as it arrived.
    def script(n: int, head: bytes) -> tuple[bytes, bool]:
        return (b"", True) if n == 2 else (ok(b"answer %d" % n), False)

    server = serve(script)
    upstream = server.upstream()
    upstream.send("GET", "/", [], None)
    assert read_all(upstream.send("GET", "/", [], None).body) == b"answer 3"  # retried on a new connection
    assert server.connections == 2

    second = serve(script)
    upstream = second.upstream()
    upstream.send("GET", "/", [], None)
    with pytest.raises(UpstreamError, match="without answering"):
        upstream.send("POST", "/", [("Content-Length", "2")], [b"hi"])  # not idempotent: never sent twice
    assert len(second.requests) == 2


def test_oversized_response_head_is_refused(serve: Callable[[Script], ScriptedServer]) -> None:
    huge = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(80))
    server = serve(lambda n, head: (ok(b"", huge), False))
    with pytest.raises(UpstreamError, match="too large"):
        server.upstream().send("GET", "/", [], None)


def test_request_body_is_sent_chunked_when_its_length_is_unknown(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda n, head: (ok(), False))
    upstream = server.upstream()
    assert read_all(upstream.send("PUT", "/upload", [("Host", "x")], iter([b"abc", b"", b"defg"])).body) == b"hello"
    head, body = server.requests[0].split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    assert read_all(upstream.send("GET", "/", [], None).body) == b"hello"  # framing intact after it
    assert server.connections == 1


def test_header_that_would_split_the_request_is_refused(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda n, head: (ok(), False))
    with pytest.raises(BadHeader):
        server.upstream().send("GET", "/", [("X-Evil", "a\r\nX-Injected: 1")], None)
    with pytest.raises(BadHeader):
        server.upstream().send("GET", "/", [("X-Wide", "\u2603")], None)
    assert server.requests == []


def test_bad_header_through_the_proxy_is_a_400_naming_the_problem(
    settings_for: Callable[..., ProxySettings],
) -> None:
    client = create_app(settings_for()).test_client()
    response = client.get("/api/v1/users", headers={"X-Wide": "\u2603"})
    assert response.status_code == 400
    assert response.json is not None and response.json["error"]["code"] == "bad_header"


def test_unexpected_error_is_a_json_500_with_request_id_and_reaches_sentry(
    settings_for: Callable[..., ProxySettings], sentry_sink: SentrySink
) -> None:
    class BrokenLimiter(MemoryLimiter):
        def hit(self, *args: object, **kwargs: object) -> Decision:
            raise RuntimeError("limiter exploded")

        def peek(self, *args: object, **kwargs: object) -> Decision:
            raise RuntimeError("limiter exploded")

    sentry_sink.clear()
    settings = settings_for(sentry=SentrySettings(dsn=sentry_sink.dsn, environment="test"))
    app: Flask = create_app(settings, limiter=BrokenLimiter())  # type: ignore[arg-type]
    try:
        response = app.test_client().get("/api/v1/users", headers={"X-Request-ID": "req-42"})
        assert response.status_code == 500
        assert response.headers["X-Request-ID"] == "req-42"
        assert response.json is not None and response.json["error"]["details"] == {"request_id": "req-42"}
        wait_until(lambda: len(sentry_sink.events()) >= 1, timeout=10)
        (event,) = sentry_sink.events()
        assert event["tags"]["request_id"] == "req-42"
        assert event["exception"]["values"][-1]["value"] == "limiter exploded"
    finally:
        sentry_sdk.flush(5)
        sentry_sdk.get_client().close()
        sentry_sdk.init()


def test_idle_connection_check_works_past_descriptor_1023(serve: Callable[[Script], ScriptedServer]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # as in a busy worker
    try:
        server = serve(lambda n, head: (ok(b"answer %d" % n), False))
        upstream = server.upstream()
        assert read_all(upstream.send("GET", "/", [], None).body) == b"answer 1"
        assert read_all(upstream.send("GET", "/", [], None).body) == b"answer 2"  # the reused socket, fd > 1023
        assert server.connections == 1
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_framing_is_the_proxys_own_never_the_clients_headers(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda n, head: (ok(), False))
    upstream = server.upstream()
    upstream.send("POST", "/known", [("Host", "x")], iter([b"abc"]), content_length=3)
    upstream.send("POST", "/empty", [("Host", "x")], None, content_length=0)
    heads = [request.split(b"\r\n\r\n", 1)[0].lower() for request in server.requests]
    assert heads[0].count(b"content-length") == 1 and b"content-length: 3" in heads[0]
    assert b"content-length: 0" in heads[1] and b"transfer-encoding" not in heads[1]
    assert server.requests[0].endswith(b"\r\n\r\nabc")


def test_limiter_survives_a_redis_restart_without_failing_a_request() -> None:
    import redis as redis_py

    from ratelimit_proxy.limiter import Limit
    from ratelimit_proxy.limiter_storage import RedisLimiter

    own = RedisServer()
    own.start()
    try:
        limiter = RedisLimiter(redis_py.Redis.from_url(own.url, socket_timeout=2))
        limits = [Limit("minute", 100, 60)]
        assert limiter.hit("restart", limits).allowed  # leaves one idle connection behind
        own.stop()
        own.start()  # same port, new process: the idle connection is dead, the script unknown
        decision = limiter.hit("restart", limits)
        assert decision.allowed and decision.windows[0].remaining == 99
    finally:
        own.close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vibelux test upstream")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "upstream.pem", directory / "upstream.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_https_upstream_is_verified_against_the_configured_ca(
    serve: Callable[..., ScriptedServer], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = serve(lambda n, head: (ok(b"secure %d" % n), False), tls)
    trusting = server.upstream(ca_file=str(cert))
    assert read_all(trusting.send("GET", "/", [], None).body) == b"secure 1"
    assert read_all(trusting.send("GET", "/", [], None).body) == b"secure 2"  # the TLS connection is reused
    assert server.connections == 1
    with pytest.raises(UpstreamError, match="TLS with the upstream failed"):
        server.upstream().send("GET", "/", [], None)  # the system's trust store does not know this CA
