"""The archiver status a scrape reads is the last check's: a scrape never runs Litestream or lists S3.

The stores here are stand-ins that count how often they are asked (what is under test is when the watch
asks, not what a store answers: the real stores' answers are tested in test_sqlite.py, test_drills.py and
test_redis_state.py, through the service's jobs and /metrics).
"""

from __future__ import annotations

import logging

import pytest

from backups.service import ArchiverWatch
from backups.store import ArchiverStatus, BackupError


class CountingStore:
    def __init__(self, answer: ArchiverStatus | Exception) -> None:
        self.answer, self.asked = answer, 0

    def archiver_status(self) -> ArchiverStatus:
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watch_of(**stores: CountingStore) -> tuple[ArchiverWatch, Clock]:
    clock = Clock()
    return ArchiverWatch(stores, every=15.0, clock=clock), clock  # type: ignore[arg-type]


def test_reading_the_status_never_asks_the_store() -> None:
    store = CountingStore(ArchiverStatus(2.0, 0))
    watch, _ = watch_of(tickets=store)
    assert watch.status("tickets") is None  # not checked yet: unknown, the series is left out
    watch.check("tickets")
    for _ in range(5):
        assert watch.status("tickets") == ArchiverStatus(2.0, 0)
    assert store.asked == 1


def test_a_check_older_than_three_periods_is_unknown() -> None:
    watch, clock = watch_of(tickets=CountingStore(ArchiverStatus(0.0, 0)))
    watch.check("tickets")
    clock.now += 45.0
    assert watch.status("tickets") == ArchiverStatus(0.0, 0)
    clock.now += 0.1
    assert watch.status("tickets") is None


def test_a_store_that_cannot_be_asked_is_unknown_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch, _ = watch_of(
        down=CountingStore(BackupError("S3 unreachable")),
        broken=CountingStore(ValueError("a bug")),
        flags=CountingStore(ArchiverStatus(1.0, 3)),
    )
    with caplog.at_level(logging.ERROR, "backups.service"):
        for name in ("down", "broken", "flags"):
            watch.check(name)
    assert watch.status("down") is None
    assert watch.status("broken") is None
    assert watch.status("flags") == ArchiverStatus(1.0, 3)
    assert [record.getMessage() for record in caplog.records] == ["archiver status of broken"]
