"""``LogThrottle``: a line that repeats is written once per window, and the next one says what was held back."""

from __future__ import annotations

import logging
import threading

import pytest

from posbridge.logs import LogThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.INFO, logger="throttle-test")
    return logging.getLogger("throttle-test")


def test_a_repeated_line_is_written_once_per_window_and_then_counts_what_was_held_back(logger, caplog):
    clock = Clock()
    throttle = LogThrottle(60.0, clock=clock)
    for number in range(500):  # a full disk failing every request
        throttle.log(logger, logging.ERROR, "database write failed: %s", f"disk full #{number}")
    assert [r.getMessage() for r in caplog.records] == ["database write failed: disk full #0"]
    clock.now += 61
    throttle.log(logger, logging.ERROR, "database write failed: %s", "disk full #500")
    assert caplog.records[-1].getMessage() == (
        "database write failed: disk full #500 (499 similar lines not shown in the last 61 s)")
    assert caplog.records[-1].levelno == logging.ERROR


def test_different_lines_and_keys_are_throttled_separately(logger, caplog):
    throttle = LogThrottle(60.0, clock=Clock())
    throttle.log(logger, logging.WARNING, "cloud down: %s", "a")
    throttle.log(logger, logging.WARNING, "disk full: %s", "b")
    throttle.log(logger, logging.WARNING, "cloud down: %s", "c", key="other")
    throttle.log(logger, logging.WARNING, "cloud down: %s", "d")
    assert [r.getMessage() for r in caplog.records] == ["cloud down: a", "disk full: b", "cloud down: c"]


def test_reset_lets_the_next_line_through_at_once(logger, caplog):
    throttle = LogThrottle(60.0, clock=Clock())
    throttle.log(logger, logging.INFO, "x", key="k")
    throttle.reset("k")
    assert throttle.log(logger, logging.INFO, "x", key="k") is True
    assert len(caplog.records) == 2


def test_the_keys_remembered_are_bounded(logger):
    throttle = LogThrottle(60.0, max_keys=10, clock=Clock())
    for number in range(1000):
        throttle.log(logger, logging.INFO, "line", key=number)
    assert len(throttle._seen) == 10


def test_a_disabled_level_costs_nothing_and_is_not_counted(logger, caplog):
    throttle = LogThrottle(60.0, clock=Clock())
    assert throttle.log(logger, logging.DEBUG, "quiet") is False
    assert throttle.log(logger, logging.INFO, "quiet") is True
    assert [r.getMessage() for r in caplog.records] == ["quiet"]


def test_threads_share_one_window(logger, caplog):
    throttle = LogThrottle(60.0)

    def spam() -> None:
        for _ in range(200):
            throttle.log(logger, logging.ERROR, "writer thread line")

    threads = [threading.Thread(target=spam) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(caplog.records) == 1
