"""Circuit breaker around Redis: after ``failures`` errors in a row, skip Redis for ``reset_seconds``
(each request then costs nothing instead of a timeout), then let one trial request through."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(self, failures: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures
        self._reset = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        """May this request try Redis? Closed: yes. Open: only one trial once the reset time passed."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._trial_running or self._clock() - self._opened_at < self._reset:
                return False
            self._trial_running = True
            return True

    def success(self) -> bool:
        """Record a good call; True when it closed an open circuit."""
        if self._failures == 0:  # the hot path: nothing to reset, no lock taken
            return False
        return self.reset()

    def reset(self) -> bool:
        """Close the circuit now (the store is known to be back: a Sentinel named a new primary); True
        when it was open."""
        with self._lock:
            was_open = self._opened_at is not None
            self._failures, self._opened_at, self._trial_running = 0, None, False
            return was_open

    def failure(self) -> bool:
        """Record an error; True when this error opened (or re-opened) the circuit."""
        with self._lock:
            self._failures += 1
            self._trial_running = False
            if self._opened_at is not None or self._failures >= self._threshold:
                self._opened_at = self._clock()
                return True
            return False
