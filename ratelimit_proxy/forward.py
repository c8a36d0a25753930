"""Forwarding to the one configured upstream: HTTP/1.1 over pooled keep-alive sockets, parsed by llhttp.

The upstream is fixed at start-up: the request's Host header and an absolute-form target never choose
where a request goes (granian already reduces ``GET http://other/x`` to the path ``/x``).

Why its own client rather than urllib3 or http.client: a small GET costs about 200 µs of CPU through
urllib3 and 100 µs through http.client, mostly header parsing in Python; over a socket with llhttp (the
parser of Node.js, through httptools, as in uvicorn) it costs about 20 µs (bench/RESULTS.md). The proxy's
whole budget is a few hundred µs per request, so this is the part worth owning. What the client does:
keep-alive connections reused last-in first-out (an idle connection the upstream closed is noticed before
use), connect and read timeouts, request bodies sent as they arrive (Content-Length or chunked), response
bodies handed over whole when small and streamed otherwise, 1xx interim responses skipped.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httptools

from ratelimit_proxy.settings import UpstreamSettings

CHUNK = 64 * 1024
MAX_RESPONSE_HEAD_BYTES = 64 * 1024
# RFC 9110 7.6.1 hop-by-hop fields, plus Proxy-Connection (legacy), Proxy (httpoxy: a CGI variable) and
# Expect (the server in front of us already answered any 100-continue).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
     "trailer", "transfer-encoding", "upgrade", "proxy", "expect"}
)  # fmt: skip
# Also dropped: the framing headers (the proxy frames the body it sends itself; a client's own, e.g.
# `Content_Length` which the server maps to HTTP_CONTENT_LENGTH, would desynchronise the upstream connection)
# and the headers the proxy sets from what it knows.
NOT_FORWARDED = HOP_BY_HOP | {
    "content-length", "content-type", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id",
    "host",
}  # fmt: skip
# Safe to send again on a fresh connection when a reused one turns out closed (RFC 9110 9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
PATH_SAFE = "/:@!$&'()*+,;=-._~"


class UpstreamError(Exception):
    """The upstream could not answer: ``timeout`` distinguishes 504 from 502."""

    def __init__(self, message: str, timeout: bool) -> None:
        super().__init__(message)
        self.timeout = timeout


class BodyTooLarge(Exception):
    pass


class BodyIncomplete(Exception):
    """The client sent less body than its Content-Length announced, or its body could not be read."""


class BadHeader(ValueError):
    """A header that cannot be written upstream as it is (CR or LF, characters outside latin-1)."""


class _ClosedBeforeAnswer(Exception):
    """A connection gave no byte of an answer: on a reused connection, the upstream closed it idle."""


def target_of(environ: dict[str, Any]) -> str:
    """The path and query to request upstream, re-encoded from the WSGI (latin-1 decoded) path."""
    path = quote(environ.get("PATH_INFO", "").encode("latin-1"), safe=PATH_SAFE)
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def request_headers(environ: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    """The client's headers to send upstream (Content-Length excepted: ``Upstream.send`` frames the body),
    and the size of all of them (one pass over the environ). Dropped: see NOT_FORWARDED, and the headers
    that Connection names."""
    headers, size = [], 0
    for key, value in environ.items():
        if key[:5] == "HTTP_":
            size += len(key) + len(value)
            name = key[5:].replace("_", "-")
            if name.lower() not in NOT_FORWARDED:
                headers.append((name.title(), value))
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", environ["CONTENT_TYPE"]))
    if "HTTP_CONNECTION" in environ:
        named = {t.strip().lower() for t in environ["HTTP_CONNECTION"].split(",")}
        headers = [(k, v) for k, v in headers if k.lower() not in named]
    return headers, size


def limited_chunks(stream: Any, limit: int) -> Iterator[bytes]:
    """A body of unknown length (chunked), read piece by piece; more than ``limit`` bytes raises BodyTooLarge."""
    seen = 0
    while chunk := _read_client(stream, CHUNK):
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge
        yield chunk


def exact_chunks(stream: Any, length: int) -> Iterator[bytes]:
    """A body of announced length; a client that sends less is an error, not a shorter body upstream."""
    left = length
    while left:
        chunk = _read_client(stream, min(CHUNK, left))
        if not chunk:
            raise BodyIncomplete("the client sent less body than its Content-Length")
        left -= len(chunk)
        yield chunk


def _read_client(stream: Any, size: int) -> bytes:
    """A read of the client's body; its failure (the client went away) is not the upstream's."""
    try:
        chunk: bytes = stream.read(size)
    except OSError as exc:
        raise BodyIncomplete(f"reading the request body failed: {exc}") from None
    return chunk


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # repeated ones (Set-Cookie) kept apart, hop-by-hop ones removed
    body: bytes | Iterator[bytes]  # bytes when the whole body was small enough to read at once


class _Reader:
    """httptools callbacks collecting one response; 1xx interim responses are dropped."""

    def __init__(self, head_only: bool) -> None:
        self.head_only = head_only  # a response to HEAD has no body whatever its Content-Length says
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[str, str]] = []
        self.head_bytes = 0
        self.chunks: list[bytes] = []
        self.content_length: int | None = None
        self.chunked = False
        self.headers_done = False
        self.complete = False
        self.keep_alive = False  # read at the end of the head: llhttp resets it once the message completes

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_RESPONSE_HEAD_BYTES:
            raise UpstreamError("the upstream's response headers are too large", timeout=False)
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            return  # interim: its message completes at once and the real response follows
        self.status, self.headers_done = status, True
        self.keep_alive = bool(self.parser.should_keep_alive())
        self.complete = self.head_only

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if not self.headers_done:  # the end of an interim response
            self.headers, self.reason, self.head_bytes = [], b"", 0
        else:
            self.complete = True

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, UpstreamError):  # raised by a callback above
                raise exc.__context__ from None
            raise

    def take_chunks(self) -> list[bytes]:
        chunks, self.chunks = self.chunks, []
        return chunks

    def forwarded_headers(self) -> list[tuple[str, str]]:
        named: set[str] = set()
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == "connection":
                named.update(t.strip().lower() for t in value.split(","))
            elif lowered == "content-length" and value.isdigit():
                self.content_length = int(value)
            elif lowered == "transfer-encoding":
                self.chunked = "chunked" in value.lower()
        return [(k, v) for k, v in self.headers if k.lower() not in HOP_BY_HOP and k.lower() not in named]


class Upstream:
    def __init__(self, settings: UpstreamSettings) -> None:
        parts = urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream.url must be http(s)://host[:port], got {settings.url!r}")
        self.netloc = parts.netloc
        self.prefix = parts.path.rstrip("/")
        self.preserve_host = settings.preserve_host
        self._address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self._tls = None
        if parts.scheme == "https":
            self._tls = ssl.create_default_context(cafile=settings.ca_file or None)
        self._connect_timeout = settings.connect_timeout_seconds
        self._read_timeout = settings.read_timeout_seconds
        self._max_idle = settings.pool_size
        self._idle: list[socket.socket] = []  # list.append and list.pop are atomic: no lock needed

    def send(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: Iterable[bytes] | None = None,
        content_length: int | None = None,
    ) -> UpstreamResponse:
        """Send the request. The proxy frames the body itself: ``content_length`` when known, chunked for
        a body of unknown length, nothing when ``body`` is None (``headers`` must carry no framing). The
        body of a large response is an iterator that must be consumed or closed: that hands the
        connection back."""
        chunked = body is not None and content_length is None
        head = self._head(method, target, headers, content_length, chunked)
        # A reused connection may have been closed by the upstream just as we wrote: a request without a
        # body that the upstream never answered can go again once, on a new connection.
        retry_allowed = body is None and method in IDEMPOTENT
        while True:
            sock, reused = self._acquire()
            try:
                self._write(sock, head, body, chunked)
                return self._read(sock, head_only=method == "HEAD")
            except _ClosedBeforeAnswer:
                sock.close()
                if reused and retry_allowed:
                    retry_allowed = False
                    continue
                raise UpstreamError("the upstream closed the connection without answering", timeout=False) from None
            except TimeoutError:
                sock.close()
                raise UpstreamError("the upstream did not answer in time", timeout=True) from None
            except (OSError, httptools.HttpParserError) as exc:
                sock.close()
                if reused and retry_allowed and isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                    retry_allowed = False
                    continue
                raise UpstreamError(f"the upstream failed: {type(exc).__name__}", timeout=False) from None
            except BaseException:  # BodyTooLarge, BodyIncomplete, UpstreamError: never reuse the connection
                sock.close()
                raise

    def _head(
        self, method: str, target: str, headers: list[tuple[str, str]], content_length: int | None, chunked: bool
    ) -> bytes:
        lines = [f"{method} {self.prefix}{target} HTTP/1.1\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        if content_length is not None:
            lines.append(f"Content-Length: {content_length}\r\n")
        if chunked:
            lines.append("Transfer-Encoding: chunked\r\n")
        lines.append("\r\n")
        text = "".join(lines)
        # Each line brings exactly one CR LF: any other means a value that would split the request.
        if text.count("\n") != len(lines) or text.count("\r") != len(lines):
            raise BadHeader("a request header contains CR or LF")
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            raise BadHeader("a request header is not latin-1") from None

    def _acquire(self) -> tuple[socket.socket, bool]:
        """An idle connection (most recently used first) or a new one; True when reused."""
        while self._idle:
            try:
                sock = self._idle.pop()
            except IndexError:
                break
            # An idle connection with something to read has been closed by the upstream (or broke).
            # poll, not select: select fails on descriptors above 1023, common in a busy worker.
            readable = select.poll()
            readable.register(sock, select.POLLIN)
            if readable.poll(0):
                sock.close()
                continue
            return sock, True
        return self._connect(), False

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection(self._address, timeout=self._connect_timeout)
        except TimeoutError:
            raise UpstreamError("the upstream did not accept the connection in time", timeout=True) from None
        except OSError as exc:
            raise UpstreamError(f"the upstream refused the connection ({exc.strerror})", timeout=False) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self._address[0])
            except OSError as exc:  # ssl.SSLError included
                sock.close()
                raise UpstreamError(f"TLS with the upstream failed: {exc}", timeout=False) from None
        sock.settimeout(self._read_timeout)
        return sock

    def _release(self, sock: socket.socket) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append(sock)
        else:
            sock.close()

    @staticmethod
    def _write(sock: socket.socket, head: bytes, body: Iterable[bytes] | None, chunked: bool) -> None:
        sock.sendall(head)
        if body is None:
            return
        for chunk in body:
            if chunked and chunk:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            elif chunk:
                sock.sendall(chunk)
        if chunked:
            sock.sendall(b"0\r\n\r\n")

    def _read(self, sock: socket.socket, head_only: bool) -> UpstreamResponse:
        reader = _Reader(head_only)
        received = 0
        while not reader.headers_done:
            data = sock.recv(CHUNK)
            if not data:
                if received == 0:
                    raise _ClosedBeforeAnswer
                raise UpstreamError("the upstream closed the connection mid-response", timeout=False)
            received += len(data)
            reader.feed(data)
        headers = reader.forwarded_headers()
        reason = reader.reason.decode("latin-1")
        small = reader.content_length is not None and reader.content_length <= CHUNK
        while small and not reader.complete:
            data = sock.recv(CHUNK)
            if not data:
                raise UpstreamError("the upstream closed the connection mid-body", timeout=False)
            reader.feed(data)
        if reader.complete:
            body = b"".join(reader.take_chunks())
            if reader.keep_alive:
                self._release(sock)
            else:
                sock.close()
            return UpstreamResponse(reader.status, reason, headers, body)
        return UpstreamResponse(reader.status, reason, headers, self._stream(sock, reader))

    def _stream(self, sock: socket.socket, reader: _Reader) -> Iterator[bytes]:
        """The rest of a large body as it arrives. A body delimited by the connection's end (neither
        Content-Length nor chunked) ends at EOF; any other early EOF is an error (the server then
        aborts the client's response rather than pass a truncated body off as complete)."""
        reusable = False
        try:
            while True:
                chunks = reader.take_chunks()
                if chunks:
                    yield b"".join(chunks)
                if reader.complete:
                    reusable = reader.keep_alive
                    return
                data = sock.recv(CHUNK)
                if not data:
                    if reader.content_length is None and not reader.chunked:
                        return  # delimited by close
                    raise UpstreamError("the upstream closed the connection mid-body", timeout=False)
                reader.feed(data)
        finally:
            if reusable:
                self._release(sock)
            else:
                sock.close()
