"""Forwarding to the one configured upstream over a pooled urllib3 connection, bodies streamed both ways.

The upstream is fixed at start-up: the request's Host header and an absolute-form target never choose
where a request goes (granian already reduces ``GET http://other/x`` to the path ``/x``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ReadTimeoutError

from ratelimit_proxy.settings import UpstreamSettings

CHUNK = 64 * 1024
# RFC 9110 7.6.1 hop-by-hop fields, plus Proxy-Connection (legacy) and Proxy (httpoxy: a CGI variable).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
     "trailer", "transfer-encoding", "upgrade", "proxy"}
)  # fmt: skip
PATH_SAFE = "/:@!$&'()*+,;=-._~"


class UpstreamError(Exception):
    """The upstream could not answer: ``timeout`` distinguishes 504 from 502."""

    def __init__(self, message: str, timeout: bool) -> None:
        super().__init__(message)
        self.timeout = timeout


class BodyTooLarge(Exception):
    pass


def target_of(environ: dict[str, Any]) -> str:
    """The path and query to request upstream, re-encoded from the WSGI (latin-1 decoded) path."""
    path = quote(environ.get("PATH_INFO", "").encode("latin-1"), safe=PATH_SAFE)
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def request_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """Client headers minus hop-by-hop ones (and those Connection names)."""
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").title(), value))
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", environ["CONTENT_TYPE"]))
    if environ.get("CONTENT_LENGTH"):
        headers.append(("Content-Length", environ["CONTENT_LENGTH"]))
    named = {t.strip().lower() for t in environ.get("HTTP_CONNECTION", "").split(",")}
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP and k.lower() not in named]


def header_bytes(environ: dict[str, Any]) -> int:
    return sum(len(k) + len(v) for k, v in environ.items() if k.startswith("HTTP_") and isinstance(v, str))


def limited_chunks(stream: Any, limit: int) -> Iterator[bytes]:
    """A chunked request body, read piece by piece; more than ``limit`` bytes raises BodyTooLarge."""
    seen = 0
    while chunk := stream.read(CHUNK):
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge
        yield chunk


class Upstream:
    def __init__(self, settings: UpstreamSettings) -> None:
        parts = urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream.url must be http(s)://host[:port], got {settings.url!r}")
        self.netloc = parts.netloc
        self.prefix = parts.path.rstrip("/")
        self.preserve_host = settings.preserve_host
        timeout = urllib3.Timeout(connect=settings.connect_timeout_seconds, read=settings.read_timeout_seconds)
        self.pool: urllib3.HTTPConnectionPool = urllib3.connection_from_url(
            settings.url, maxsize=settings.pool_size, block=False, timeout=timeout, retries=False
        )

    def send(self, method: str, target: str, headers: list[tuple[str, str]], body: Any) -> urllib3.BaseHTTPResponse:
        """Send the request; the response body is left unread for streaming."""
        chunked = body is not None and not any(k == "Content-Length" for k, _ in headers)
        try:
            return self.pool.urlopen(
                method,
                self.prefix + target,
                body=body,
                headers=dict(headers),  # WSGI already joined repeated request headers
                retries=False,
                redirect=False,
                preload_content=False,
                decode_content=False,
                chunked=chunked,
            )
        except ReadTimeoutError as exc:
            raise UpstreamError("the upstream did not answer in time", timeout=True) from exc
        except NewConnectionError as exc:
            raise UpstreamError("the upstream refused the connection", timeout=False) from exc
        except HTTPError as exc:
            raise UpstreamError(f"the upstream failed: {type(exc).__name__}", timeout=False) from exc


def response_headers(response: urllib3.BaseHTTPResponse) -> list[tuple[str, str]]:
    """Every upstream header (repeated ones such as Set-Cookie kept apart) minus hop-by-hop ones."""
    named = {t.strip().lower() for t in response.headers.get("Connection", "").split(",")}
    return [(k, v) for k, v in response.headers.iteritems() if k.lower() not in HOP_BY_HOP and k.lower() not in named]


def small_body(response: urllib3.BaseHTTPResponse) -> bytes | None:
    """The whole body when the upstream announced a small one: one bytes object is cheaper to hand to
    the server than a generator. None for anything larger or of unknown length (then stream)."""
    length = response.headers.get("Content-Length")
    if length is None or not length.isdigit() or int(length) > CHUNK:
        return None
    try:
        return response.read(decode_content=False)
    except ReadTimeoutError as exc:
        response.close()
        raise UpstreamError("the upstream did not send its body in time", timeout=True) from exc
    except HTTPError as exc:
        response.close()
        raise UpstreamError(f"the upstream failed: {type(exc).__name__}", timeout=False) from exc
    finally:
        response.release_conn()


def stream_body(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The response body chunk by chunk; the connection goes back to the pool only when fully read."""
    complete = False
    try:
        yield from response.stream(CHUNK, decode_content=False)
        complete = True
    finally:
        if not complete:
            response.close()  # a half-read connection cannot be reused
        response.release_conn()
