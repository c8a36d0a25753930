"""Run a blocking check on its own interval with a hard timeout, so a hung dependency never stalls a scrape.

Both the health probes and the business queries are slow, blocking calls into things that can hang (a
server that accepts and never answers, a query that locks). Each runs in its own thread; the scheduler
waits at most `timeout` for it and records a timeout if it is still running. A hung attempt is never
doubled up: while it is still running, the next tick records another timeout instead of starting a second
one, so at most one thread per job is ever stuck.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt(Generic[T]):
    """What one run of a job produced: a value, an error, or a timeout; with its duration and end time."""

    value: T | None
    error: BaseException | None
    timed_out: bool
    duration_seconds: float
    finished_at: float  # wall clock (time.time()), for "last success" timestamps


class PeriodicJob(Generic[T]):
    """Calls `work()` every `interval` seconds (first call at start) and hands each Attempt to `record`."""

    def __init__(
        self,
        name: str,
        work: Callable[[], T],
        record: Callable[[Attempt[T]], None],
        interval: float,
        timeout: float,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError(f"{name}: interval and timeout must be positive")
        self.name = name
        self._work = work
        self._record = record
        self._interval = interval
        self._timeout = timeout
        self._running: threading.Thread | None = None
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None

    def run_once(self) -> Attempt[T]:
        """One attempt, waited for at most `timeout` seconds; recorded and returned."""
        started = time.perf_counter()
        if self._running is not None and self._running.is_alive():
            attempt: Attempt[T] = Attempt(None, TimeoutError("previous attempt still running"), True, 0.0, time.time())
        else:
            box: dict[str, object] = {}

            def target() -> None:
                try:
                    box["value"] = self._work()
                except Exception as error:  # any failure of the check is a result, recorded below
                    box["error"] = error

            thread = threading.Thread(target=target, name=f"{self.name}-attempt", daemon=True)
            thread.start()
            thread.join(self._timeout)
            duration = time.perf_counter() - started
            if thread.is_alive():
                self._running = thread
                error = TimeoutError(f"no answer within {self._timeout:g}s")
                attempt = Attempt(None, error, True, duration, time.time())
            else:
                self._running = None
                failure = box.get("error")
                attempt = Attempt(
                    box.get("value"),  # type: ignore[arg-type]
                    failure if isinstance(failure, BaseException) else None,
                    False,
                    duration,
                    time.time(),
                )
        self._record(attempt)
        self._log_change(attempt)
        return attempt

    def _log_change(self, attempt: Attempt[T]) -> None:
        """Log when a job starts failing, fails differently, or recovers; not on every failing tick."""
        error = None if attempt.error is None else f"{type(attempt.error).__name__}: {attempt.error}"
        if error != self._last_error:
            if error is not None:
                log.warning("%s failed: %s", self.name, error)
            else:
                log.info("%s recovered", self.name)
        self._last_error = error

    def start(self) -> None:
        """Start the schedule in a daemon thread (fixed rate; a slow attempt delays only its own job)."""
        self._loop = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._loop.start()

    def request_stop(self) -> None:
        """Ask the loop to end after the attempt in progress (if any); returns at once."""
        self._stop.set()

    def stop(self) -> None:
        """End the loop and wait for it (at most one timeout: an attempt never runs longer)."""
        self._stop.set()
        if self._loop is not None:
            self._loop.join(self._timeout + 1)

    def _run(self) -> None:
        next_run = time.monotonic()
        while not self._stop.is_set():
            self.run_once()
            next_run += self._interval
            self._stop.wait(max(0.0, next_run - time.monotonic()))
            next_run = max(next_run, time.monotonic() - self._interval)  # after a long stall, do not burst


class JobSet:
    """Several PeriodicJobs started and stopped together (stop asks all first, so hung ones end in parallel)."""

    def __init__(self, jobs: dict[str, PeriodicJob[Any]]) -> None:
        self.jobs = jobs

    def start(self) -> None:
        for job in self.jobs.values():
            job.start()

    def stop(self) -> None:
        for job in self.jobs.values():
            job.request_stop()
        for job in self.jobs.values():
            job.stop()
