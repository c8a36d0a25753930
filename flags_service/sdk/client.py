"""``FlagsClient``: local evaluation of the service's snapshot, kept fresh by ETag polling and SSE.

It never fails start-up or a call: before the first snapshot it serves the last-known-good copy from disk
(reason ``STALE``), else the caller's default (reason ``ERROR``, error code ``PROVIDER_NOT_READY``); while
the service is unreachable it keeps serving what it has, marked ``STALE``. All public methods are
thread-safe: the snapshot is an immutable value swapped atomically, counts sit behind a lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import requests

from flags_service.engine import EMPTY_METADATA, ERROR, Evaluation, context_attributes, evaluate

log = logging.getLogger("vibelux.flags.sdk")

NOT_READY, READY, STALE = "NOT_READY", "READY", "STALE"
MAX_PENDING_COUNT_KEYS = 10_000


class Details(NamedTuple):
    """The outcome of one evaluation, shaped like OpenFeature's resolution details (a tuple: cheap)."""

    key: str
    value: Any
    variant: str | None
    reason: str
    error_code: str | None = None
    error_message: str | None = None
    rule_id: str | None = None
    flag_metadata: Mapping[str, Any] = EMPTY_METADATA


@dataclass(frozen=True)
class _Snapshot:
    version: int
    etag: str | None
    flags: Mapping[str, Mapping[str, Any]]
    segments: Mapping[str, Mapping[str, Any]]
    document: Mapping[str, Any]
    fixed: Mapping[str, Evaluation]  # results of context-free flags, evaluated once per snapshot
    tiers: tuple[str, ...] | None  # the platform's tiers, as the service sends them (None: an older snapshot)


class FlagsClient:
    """A server-side SDK client for one environment (the server SDK key decides which)."""

    def __init__(
        self,
        base_url: str,
        sdk_key: str,
        *,
        cache_path: str | Path | None = None,
        poll_interval: float = 30.0,
        stream: bool = True,
        flush_interval: float = 10.0,
        timeout: float = 3.0,
        max_backoff: float = 30.0,
        bootstrap: Mapping[str, Any] | None = None,
        start: bool = True,
    ) -> None:
        """``bootstrap``: a snapshot document (``GET /api/v1/sdk/snapshot``) to serve, like the disk copy,
        until the service answers; e.g. baked into an image for air-gapped starts, or for offline tests."""
        self.base_url = base_url.rstrip("/")
        self.cache_path = Path(cache_path) if cache_path else None
        self.poll_interval = poll_interval
        self.stream = stream
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.max_backoff = max_backoff
        self._http = requests.Session()
        self._http.headers.update({"Authorization": f"Bearer {sdk_key}", "User-Agent": "vibelux-flags-python"})
        self._snapshot: _Snapshot | None = None
        self._healthy = False
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._counts: dict[tuple[str, str | None], int] = {}
        self._counts_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stream_response: requests.Response | None = None
        self._load_from_disk()
        if bootstrap is not None and (self.version is None or int(bootstrap["version"]) > self.version):
            self._install(bootstrap, None)  # whichever of disk copy and bootstrap is newer
        if start:
            self.start()

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background threads; returns at once and never raises."""
        if self._threads:
            return
        for target, name in ((self._sync_loop, "flags-sync"), (self._flush_loop, "flags-flush")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait_until_ready(self, timeout: float) -> bool:
        """True once a snapshot came from the service (not only from disk)."""
        return self._ready.wait(timeout)

    def close(self) -> None:
        """Stop syncing and send the remaining evaluation counts."""
        self._stop.set()
        self._wake.set()
        response = self._stream_response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()
        for thread in self._threads:
            thread.join(self.timeout + 2)
        self.flush()
        self._http.close()

    def __enter__(self) -> FlagsClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def status(self) -> str:
        if self._snapshot is None:
            return NOT_READY
        return READY if self._healthy else STALE

    @property
    def version(self) -> int | None:
        snapshot = self._snapshot
        return None if snapshot is None else snapshot.version

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, key: str, context: Mapping[str, Any] | None = None, default: Any = None) -> Details:
        """Evaluate ``key`` locally; never raises."""
        snapshot = self._snapshot
        if snapshot is None:
            return Details(key, default, None, ERROR, "PROVIDER_NOT_READY", "no snapshot yet")
        flag = snapshot.flags.get(key)
        if flag is None:
            return Details(key, default, None, ERROR, "FLAG_NOT_FOUND", f"flag {key!r} is not in the snapshot")
        tier = context.get("tier") if context else None
        if tier is not None and snapshot.tiers is not None and tier not in snapshot.tiers:
            # As OFREP answers: an unknown tier is never served as another one, nor as no tier.
            return Details(key, default, None, ERROR, "INVALID_CONTEXT", f"tier must be one of {snapshot.tiers}")
        try:
            result = snapshot.fixed.get(key) or evaluate(flag, context or {}, snapshot.segments, snapshot.flags)
        except Exception as exc:  # a malformed snapshot must not break the caller's request
            log.exception("evaluation of %s failed", key)
            return Details(key, default, None, ERROR, "GENERAL", type(exc).__name__)
        if result.reason == ERROR:
            return Details(key, default, None, ERROR, result.error_code, result.error_message, None, result.metadata)
        count_key = (key, result.variant)
        with self._counts_lock:  # inline, not a method: this is every call's hot path
            counts = self._counts
            pending = counts.get(count_key)
            if pending is not None:
                counts[count_key] = pending + 1
            elif len(counts) < MAX_PENDING_COUNT_KEYS:
                counts[count_key] = 1
        reason = result.reason if self._healthy else STALE
        return Details(key, result.value, result.variant, reason, None, None, result.rule_id, result.metadata)

    def is_enabled(self, key: str, context: Mapping[str, Any] | None = None, default: bool = False) -> bool:
        value = self.evaluate(key, context, default).value
        return value if isinstance(value, bool) else default

    def value(self, key: str, context: Mapping[str, Any] | None = None, default: Any = None) -> Any:
        return self.evaluate(key, context, default).value

    def all_flags(self, context: Mapping[str, Any] | None = None) -> dict[str, Details]:
        snapshot = self._snapshot
        return {key: self.evaluate(key, context) for key in (snapshot.flags if snapshot else {})}

    # -- snapshot sync ------------------------------------------------------------------------------
    def _install(self, document: Mapping[str, Any], etag: str | None) -> None:
        flags, segments = document["flags"], document.get("segments", {})
        fixed = {
            key: evaluate(flag, {}, segments, flags)
            for key, flag in flags.items()
            if context_attributes(flag, flags) == frozenset()
        }
        tiers = tuple(document["tiers"]) if "tiers" in document else None
        self._snapshot = _Snapshot(int(document["version"]), etag, flags, segments, document, fixed, tiers)

    def _load_from_disk(self) -> None:
        if self.cache_path is None or not self.cache_path.exists():
            return
        try:
            stored = json.loads(self.cache_path.read_text(encoding="utf-8"))
            self._install(stored["snapshot"], stored.get("etag"))
            log.info("serving last-known-good flags (version %s) from %s", self.version, self.cache_path)
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable flag cache %s", self.cache_path)

    def _save_to_disk(self, document: Mapping[str, Any], etag: str | None) -> None:
        if self.cache_path is None:
            return
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.cache_path.parent, prefix=".flags-", suffix=".json")
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump({"etag": etag, "snapshot": document}, file)
            os.replace(temporary, self.cache_path)  # atomic: a crash never leaves half a cache
        except OSError:
            log.warning("could not write the flag cache %s", self.cache_path)

    def refresh(self) -> bool:
        """Fetch the snapshot if it changed (ETag); True when the service answered."""
        snapshot = self._snapshot
        headers = {"If-None-Match": snapshot.etag} if snapshot is not None and snapshot.etag else {}
        try:
            response = self._http.get(f"{self.base_url}/api/v1/sdk/snapshot", headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            self._mark_unhealthy(f"{type(exc).__name__}")
            return False
        if response.status_code == 304:
            self._mark_healthy()
            return True
        if response.status_code != 200:
            self._mark_unhealthy(f"HTTP {response.status_code}")
            return False
        try:
            document = response.json()
            self._install(document, response.headers.get("ETag"))
        except (ValueError, KeyError, TypeError):
            self._mark_unhealthy("unreadable snapshot")
            return False
        self._save_to_disk(document, response.headers.get("ETag"))
        self._mark_healthy()
        return True

    def _mark_healthy(self) -> None:
        if not self._healthy:
            log.info("flag service reachable; snapshot version %s", self.version)
        self._healthy = True
        self._ready.set()

    def _mark_unhealthy(self, why: str) -> None:
        if self._healthy:
            log.warning("flag service unreachable (%s); serving last-known flags", why)
        self._healthy = False

    def _sync_loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self.refresh():
                    backoff = 0.5
                    if self.stream:
                        self._follow_stream()
                        continue  # the stream ended: refresh at once, then reconnect
                    wait = self.poll_interval
                else:
                    wait, backoff = backoff, min(backoff * 2, self.max_backoff)
            except Exception:
                log.exception("flag sync failed")
                wait = backoff
            self._wake.wait(wait)
            self._wake.clear()

    def _follow_stream(self) -> None:
        """Read server-sent events; refresh on every announced version the client does not have."""
        try:
            with self._http.get(
                f"{self.base_url}/api/v1/sdk/stream", stream=True, timeout=(self.timeout, self.poll_interval)
            ) as response:
                if response.status_code != 200:
                    self._wake.wait(min(self.poll_interval, self.max_backoff))
                    return
                self._stream_response = response
                for version in _stream_versions(response.iter_lines(decode_unicode=True)):
                    if self._stop.is_set():
                        return
                    if version != self.version:
                        self.refresh()
        except (requests.RequestException, AttributeError, ValueError):
            # AttributeError: urllib3 after close() from another thread; a dropped stream is routine.
            self._mark_unhealthy("stream closed")
        finally:
            self._stream_response = None

    # -- evaluation counts ----------------------------------------------------------------------------
    def flush(self) -> bool:
        """Send pending evaluation counts; on failure they are kept for the next try."""
        with self._counts_lock:
            counts, self._counts = self._counts, {}
        if not counts:
            return True
        body = {"counts": [{"flag": f, "variant": v, "count": n} for (f, v), n in counts.items()]}
        try:
            response = self._http.post(f"{self.base_url}/api/v1/sdk/evaluations", json=body, timeout=self.timeout)
            if response.status_code == 202:
                return True
        except requests.RequestException:
            pass
        with self._counts_lock:
            for count_key, count in counts.items():
                if len(self._counts) < MAX_PENDING_COUNT_KEYS or count_key in self._counts:
                    self._counts[count_key] = self._counts.get(count_key, 0) + count
        return False

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:
                log.exception("sending evaluation counts failed")


def _stream_versions(lines: Iterator[str | None]) -> Iterator[int]:
    """The ``version`` of each ``data:`` line of a server-sent-event stream."""
    for line in lines:
        if line and line.startswith("data:"):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                yield int(json.loads(line[5:])["version"])
