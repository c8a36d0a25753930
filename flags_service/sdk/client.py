"""``FlagsClient``: local evaluation of the service's snapshot, kept fresh by ETag polling and SSE.

Building a client waits for the first snapshot from the service, up to ``start_wait`` seconds (5 by default,
as LaunchDarkly's ``start_wait``; Unleash's SDKs fetch before they answer too): a client made at start-up
and asked at once would otherwise answer the caller's default, e.g. "off" for a paying user. Past that wait
it never fails start-up or a call: it serves the last-known-good copy from disk (reason ``STALE``), else
the caller's default (reason ``ERROR``, error code ``PROVIDER_NOT_READY``); the first such call is logged
and every one counted (``unready_evaluations``, exported by ``flags_service.sdk.prometheus``). While the
service is unreachable it keeps serving what it has, marked ``STALE``.

Arguments are in OpenFeature's order everywhere: ``(key, default, *, context=...)``. The context is
keyword-only so a call in another order fails instead of serving a context as the answer.

All public methods are thread-safe: the snapshot is an immutable value swapped atomically, and each thread
counts its evaluations in a dict of its own that only it writes, so a call takes no lock (a lock was the
largest single cost of a static flag's call). Listeners (``add_listener``, used by the OpenFeature
provider) hear every sync outcome.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import requests

from flags_service.engine import (
    EMPTY_METADATA,
    ERROR,
    SEGMENT_MATCH,
    TARGETING_KEY,
    Evaluation,
    context_attributes,
    evaluate,
)

log = logging.getLogger("vibelux.flags.sdk")

NOT_READY, READY, STALE = "NOT_READY", "READY", "STALE"
CONFIGURATION_CHANGED = "CONFIGURATION_CHANGED"
# What an evaluation before the first snapshot from the service served (the label's whole set).
SERVED_DEFAULT, SERVED_LAST_KNOWN = "default", "last_known_good"
MAX_COUNT_KEYS = 10_000  # (flag, variant) pairs counted per thread; the snapshot bounds them already
REFUSED_STATUSES = frozenset({401, 403})  # the key is wrong or revoked: retrying will not help


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


# Details(...) runs the generated Python ``__new__``; the hot path builds the tuple directly (all fields).
_new_details: Callable[[tuple[Any, ...]], Details] = functools.partial(tuple.__new__, Details)


class ClientEvent(NamedTuple):
    """One sync outcome: ``READY`` (the service answered), ``STALE`` (it did not; the snapshot is kept),
    ``ERROR`` (no snapshot from it yet, or it refused the key or sent an unreadable one), or
    ``CONFIGURATION_CHANGED`` with the keys whose answers may differ. Repeats are normal: one per sync."""

    kind: str
    message: str | None = None
    flags_changed: tuple[str, ...] = ()


Listener = Callable[[ClientEvent], None]
CountKey = tuple[str, str | None]  # flag, variant


@dataclass
class _ThreadCounts:
    """One thread's evaluation counts since it first evaluated, written by that thread alone; ``sent`` is
    what ``flush`` has reported of them (only the flusher touches it)."""

    thread: threading.Thread
    counts: dict[CountKey, int]
    sent: dict[CountKey, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Snapshot:
    version: int
    etag: str | None
    flags: Mapping[str, Mapping[str, Any]]
    segments: Mapping[str, Mapping[str, Any]]
    document: Mapping[str, Any]
    fixed: Mapping[str, Evaluation]  # results of context-free flags, evaluated once per snapshot
    # The same as served while the service answers (reason as evaluated), with their count keys: the
    # hot path for a static flag is a lookup, no tuple built per call.
    served: Mapping[str, tuple[Details, CountKey]]
    tiers: tuple[str, ...] | None  # the platform's tiers, as the service sends them (None: an older snapshot)


def _segments_used(flag: Mapping[str, Any]) -> set[str]:
    return {
        segment
        for rule in flag.get("rules") or ()
        for clause in rule["clauses"]
        if clause["op"] == SEGMENT_MATCH
        for segment in clause["values"]
    }


def changed_flags(old: _Snapshot, new: _Snapshot) -> tuple[str, ...]:
    """Keys whose answers may differ between two snapshots: flags added, removed or edited, flags matching an
    edited segment, flags requiring any of those; every flag when the tiers changed (``INVALID_CONTEXT``)."""
    keys = old.flags.keys() | new.flags.keys()
    if old.tiers != new.tiers:
        return tuple(sorted(keys))
    changed = {key for key in keys if old.flags.get(key) != new.flags.get(key)}
    segments = {
        key for key in old.segments.keys() | new.segments.keys() if old.segments.get(key) != new.segments.get(key)
    }
    if segments:
        changed |= {key for key, flag in new.flags.items() if segments & _segments_used(flag)}
    while True:  # prerequisites: a flag requiring a changed flag may change too
        requiring = {
            key
            for key, flag in new.flags.items()
            if key not in changed and any(p["flag"] in changed for p in flag.get("prerequisites") or ())
        }
        if not requiring:
            return tuple(sorted(changed))
        changed |= requiring


def _refuse_a_context_as_default(key: str, default: Mapping[str, Any], snapshot: _Snapshot | None) -> None:
    """A dict default is right only for a JSON flag; anywhere else it is a context passed by position, as
    the old order ``(key, context)`` did, which would evaluate without the context and look right."""
    flag = snapshot.flags.get(key) if snapshot is not None else None
    json_flag = flag is not None and any(isinstance(v, dict | list) for v in flag["variants"].values())
    if TARGETING_KEY in default or (flag is not None and not json_flag):
        raise TypeError(f"{key!r}: a dict default for a non-JSON flag; call (key, default, *, context=...)")


class FlagsClient:
    """A server-side SDK client for one environment (the server SDK key decides which)."""

    def __init__(
        self,
        base_url: str,
        sdk_key: str,
        *,
        start_wait: float = 5.0,
        cache_path: str | Path | None = None,
        poll_interval: float = 30.0,
        stream: bool = True,
        flush_interval: float = 10.0,
        timeout: float = 3.0,
        max_backoff: float = 30.0,
        bootstrap: Mapping[str, Any] | None = None,
        start: bool = True,
    ) -> None:
        """``start_wait``: seconds to wait, from ``start()``, for the first snapshot from the service (0: do
        not wait). ``bootstrap``: a snapshot document (``GET /api/v1/sdk/snapshot``) to serve, like the disk
        copy, until the service answers; e.g. baked into an image for air-gapped starts, or offline tests."""
        self.base_url = base_url.rstrip("/")
        self.start_wait = start_wait
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
        self._local = threading.local()  # .counts: this thread's dict in _thread_counts
        self._thread_counts: list[_ThreadCounts] = []
        self._retired: dict[CountKey, int] = {}  # unsent counts of threads that have ended
        self._lock = threading.Lock()  # guards _thread_counts and _unready, never taken by a served call
        self._flush_lock = threading.Lock()  # one flush at a time, so "sent" is what was sent
        self._unready = {SERVED_DEFAULT: 0, SERVED_LAST_KNOWN: 0}
        self._listeners: list[Listener] = []
        self._threads: list[threading.Thread] = []
        self._start_deadline: float | None = None
        self._start_wait_reported = False  # the missed deadline is logged once, by whichever waiter finds it
        self._last_failure = "no answer yet"
        self._stream_response: requests.Response | None = None
        self._load_from_disk()
        if bootstrap is not None and (self.version is None or int(bootstrap["version"]) > self.version):
            self._install(bootstrap, None)  # whichever of disk copy and bootstrap is newer
        if start:
            self.start()
            self.wait_for_start()

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background threads; returns at once and never raises. ``start_wait`` counts from here."""
        if self._threads:
            return
        self._start_deadline = time.monotonic() + self.start_wait
        for target, name in ((self._sync_loop, "flags-sync"), (self._flush_loop, "flags-flush")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait_until_ready(self, timeout: float) -> bool:
        """True once a snapshot came from the service (not only from disk)."""
        return self._ready.wait(timeout)

    def wait_for_start(self) -> bool:
        """Wait out what is left of ``start_wait`` for the first snapshot from the service; True when it came.

        One deadline for every waiter, so the OpenFeature provider's ``initialize`` after the constructor's
        wait adds no second wait; the first waiter to find it passed without a snapshot logs it."""
        remaining = 0.0 if self._start_deadline is None else self._start_deadline - time.monotonic()
        if self.wait_until_ready(max(remaining, 0.0)):
            return True
        if self._start_deadline is None or self.start_wait <= 0:
            return False
        with self._lock:  # once: the constructor's wait may begin after the deadline on a busy machine
            report, self._start_wait_reported = not self._start_wait_reported, True
        if report:
            serving = "its last-known-good copy" if self._snapshot is not None else "the callers' defaults"
            log.warning(
                "no snapshot from the flag service at %s within %.1f s (%s); serving %s until it answers",
                self.base_url,
                self.start_wait,
                self._last_failure,
                serving,
            )
        return False

    def close(self) -> None:
        """Stop syncing and send the remaining evaluation counts; a normal shutdown logs nothing."""
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

    @property
    def unready_evaluations(self) -> dict[str, int]:
        """Evaluations before the first snapshot from the service, by what they served."""
        with self._lock:
            return dict(self._unready)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with each sync outcome, from the sync thread; it must return quickly."""
        self._listeners.append(listener)

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, key: str, default: Any = None, *, context: Mapping[str, Any] | None = None) -> Details:
        """Evaluate ``key`` locally; never raises for a well-formed call."""
        snapshot = self._snapshot
        if type(default) is dict:
            _refuse_a_context_as_default(key, default, snapshot)
        if snapshot is None:
            self._count_unready(key, SERVED_DEFAULT)
            return Details(key, default, None, ERROR, "PROVIDER_NOT_READY", "no snapshot from the flag service yet")
        if context:
            tier = context.get("tier")
            if tier is not None and snapshot.tiers is not None and tier not in snapshot.tiers:
                # As OFREP answers: an unknown tier is never served as another one, nor as no tier.
                message = f"tier must be one of {snapshot.tiers}"
                return Details(key, default, None, ERROR, "INVALID_CONTEXT", message)
        served = snapshot.served.get(key) if self._healthy else None
        if served is not None:
            details, count_key = served
        else:
            flag = snapshot.flags.get(key)
            if flag is None:
                return Details(key, default, None, ERROR, "FLAG_NOT_FOUND", f"flag {key!r} is not in the snapshot")
            try:
                result = snapshot.fixed.get(key) or evaluate(flag, context or {}, snapshot.segments, snapshot.flags)
            except Exception as exc:  # a malformed snapshot must not break the caller's request
                log.exception("evaluation of %s failed", key)
                return Details(key, default, None, ERROR, "GENERAL", type(exc).__name__)
            if result.reason == ERROR:
                code, why = result.error_code, result.error_message
                return Details(key, default, None, ERROR, code, why, None, result.metadata)
            if self._healthy:
                reason = result.reason
            else:
                reason = STALE
                if not self._ready.is_set():
                    self._count_unready(key, SERVED_LAST_KNOWN)
            details = _new_details(
                (key, result.value, result.variant, reason, None, None, result.rule_id, result.metadata)
            )
            count_key = (key, result.variant)
        try:  # inline, not a method: this is every call's hot path
            counts = self._local.counts
        except AttributeError:
            counts = self._counts_of_this_thread()
        counted = counts.get(count_key)
        if counted is not None:
            counts[count_key] = counted + 1
        elif len(counts) < MAX_COUNT_KEYS:
            counts[count_key] = 1
        return details

    def is_enabled(self, key: str, default: bool = False, *, context: Mapping[str, Any] | None = None) -> bool:
        """The boolean flag ``key``; ``default`` when it is not a boolean flag or cannot be evaluated."""
        if default is not True and default is not False:
            raise TypeError(f"is_enabled({key!r}, default, *, context=...): default must be a bool")
        value = self.evaluate(key, default, context=context).value
        return value if value is True or value is False else default

    def value(self, key: str, default: Any, *, context: Mapping[str, Any] | None = None) -> Any:
        """The value of ``key``, or ``default`` when it cannot be evaluated."""
        return self.evaluate(key, default, context=context).value

    def all_flags(self, *, context: Mapping[str, Any] | None = None) -> dict[str, Details]:
        snapshot = self._snapshot
        return {key: self.evaluate(key, context=context) for key in (snapshot.flags if snapshot else {})}

    def _count_unready(self, key: str, served: str) -> None:
        """Count an evaluation before the first snapshot from the service; log only the first."""
        with self._lock:
            first = not any(self._unready.values())
            self._unready[served] += 1
        if first:
            what = "the caller's default" if served == SERVED_DEFAULT else "the last-known-good copy"
            log.warning(
                "flag %r evaluated before the first snapshot from the flag service at %s: served %s "
                "(logged once; every such call is counted in unready_evaluations)",
                key,
                self.base_url,
                what,
            )

    # -- snapshot sync ------------------------------------------------------------------------------
    def _install(self, document: Mapping[str, Any], etag: str | None) -> tuple[str, ...]:
        """Swap in ``document``; returns the keys whose answers may have changed (none for a first one)."""
        flags, segments = document["flags"], document.get("segments", {})
        fixed = {
            key: evaluate(flag, {}, segments, flags)
            for key, flag in flags.items()
            if context_attributes(flag, flags) == frozenset()
        }
        served = {
            key: (Details(key, r.value, r.variant, r.reason, None, None, r.rule_id, r.metadata), (key, r.variant))
            for key, r in fixed.items()
            if r.reason != ERROR
        }
        tiers = tuple(document["tiers"]) if "tiers" in document else None
        previous = self._snapshot
        snapshot = _Snapshot(int(document["version"]), etag, flags, segments, document, fixed, served, tiers)
        self._snapshot = snapshot
        return () if previous is None else changed_flags(previous, snapshot)

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
            self._mark_unhealthy(f"HTTP {response.status_code}", refused=response.status_code in REFUSED_STATUSES)
            return False
        try:
            document = response.json()
            changed = self._install(document, response.headers.get("ETag"))
        except (ValueError, KeyError, TypeError):
            self._mark_unhealthy("unreadable snapshot", refused=True)
            return False
        self._save_to_disk(document, response.headers.get("ETag"))
        if changed:
            self._notify(ClientEvent(CONFIGURATION_CHANGED, f"version {self.version}", changed))
        self._mark_healthy()
        return True

    def _mark_healthy(self) -> None:
        if not self._healthy:
            log.info("flag service reachable; snapshot version %s", self.version)
        self._healthy = True
        self._ready.set()
        self._notify(ClientEvent(READY))

    def _mark_unhealthy(self, why: str, *, refused: bool = False) -> None:
        if self._stop.is_set():
            return  # close() ends the stream and any request in flight: a shutdown, not an outage
        if self._healthy:
            log.warning("flag service unreachable (%s); serving last-known flags", why)
        self._healthy = False
        self._last_failure = why
        kind = ERROR if refused or not self._ready.is_set() else STALE
        self._notify(ClientEvent(kind, f"flag service at {self.base_url}: {why}"))

    def _notify(self, event: ClientEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("flag client listener %r failed", listener)

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
    def _counts_of_this_thread(self) -> dict[CountKey, int]:
        counts: dict[CountKey, int] = {}
        self._local.counts = counts
        with self._lock:
            self._thread_counts.append(_ThreadCounts(threading.current_thread(), counts))
        return counts

    def flush(self) -> bool:
        """Send the evaluation counts not sent yet; on failure they stay unsent for the next try."""
        with self._flush_lock:
            with self._lock:
                entries = list(self._thread_counts)
            unsent = dict(self._retired)
            taken = []
            for entry in entries:
                finished = not entry.thread.is_alive()  # asked before the copy: a finished thread counts no more
                now = entry.counts.copy()  # one C-level copy: a consistent view while the owner counts on
                grown = {key: count - entry.sent.get(key, 0) for key, count in now.items()}
                _add_counts(unsent, grown)
                taken.append((entry, now, grown, finished))
            sent = not unsent or self._post_counts(unsent)
            if sent:
                self._retired = {}
                for entry, now, _, _ in taken:
                    entry.sent = now
            else:  # what ended threads left waits in one dict, not one per thread, however long the outage
                for _, _, grown, finished in taken:
                    if finished:
                        _add_counts(self._retired, grown)
            ended = {id(entry) for entry, _, _, finished in taken if finished}
            if ended:
                with self._lock:
                    self._thread_counts = [entry for entry in self._thread_counts if id(entry) not in ended]
            return sent

    def _post_counts(self, counts: Mapping[CountKey, int]) -> bool:
        body = {"counts": [{"flag": f, "variant": v, "count": n} for (f, v), n in counts.items()]}
        try:
            response = self._http.post(f"{self.base_url}/api/v1/sdk/evaluations", json=body, timeout=self.timeout)
        except requests.RequestException:
            return False
        return response.status_code == 202

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:
                log.exception("sending evaluation counts failed")


def _add_counts(into: dict[CountKey, int], counts: Mapping[CountKey, int]) -> None:
    for key, count in counts.items():
        if count and (key in into or len(into) < MAX_COUNT_KEYS):
            into[key] = into.get(key, 0) + count


def _stream_versions(lines: Iterator[str | None]) -> Iterator[int]:
    """The ``version`` of each ``data:`` line of a server-sent-event stream."""
    for line in lines:
        if line and line.startswith("data:"):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                yield int(json.loads(line[5:])["version"])
