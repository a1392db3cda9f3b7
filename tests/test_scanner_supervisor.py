"""The supervisor: driver failures are retried with backoff, never end the task, and repeats are debounced."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from posbridge.scanners import ScanEvent, ScannerGone, ScannerUnavailable, SourceExhausted
from posbridge.scanners.supervisor import Debouncer, ScannerStatus, supervise


class ScriptedSource:
    """A driver that follows a script: each open()/read() takes the next step (an exception or events)."""

    def __init__(self, opens: list[BaseException | None], reads: list[BaseException | list[str]]) -> None:
        self.name = "scripted"
        self.opens = list(opens)
        self.reads = list(reads)
        self.open_times: list[float] = []
        self.closes = 0
        self.is_open = False

    def open(self) -> None:
        self.open_times.append(time.monotonic())
        step = self.opens.pop(0) if self.opens else None
        if step is not None:
            raise step
        self.is_open = True

    def read(self) -> list[ScanEvent]:
        assert self.is_open, "read() on a closed device"
        if not self.reads:
            time.sleep(0.02)
            return []
        step = self.reads.pop(0)
        if isinstance(step, BaseException):
            raise step
        return [ScanEvent(text=t, raw=t.encode(), symbology=None, source=self.name) for t in step]

    def close(self) -> None:
        self.closes += 1
        self.is_open = False


async def _run(source: ScriptedSource, *, until: int | None = None, seconds: float = 3.0, debounce: float = 0.0,
               backoff: float = 0.05) -> tuple[list[str], ScannerStatus]:
    got: list[str] = []
    stop = asyncio.Event()
    status = ScannerStatus(name=source.name, type="test")

    async def on_scan(event: ScanEvent) -> None:
        got.append(event.text)
        if until is not None and len(got) >= until:
            stop.set()

    task = asyncio.create_task(supervise(source, on_scan, debounce=debounce, stop=stop, status=status,
                                         backoff_initial=backoff, backoff_max=0.4))
    try:
        await asyncio.wait_for(asyncio.shield(task), seconds)
    except asyncio.TimeoutError:
        stop.set()
        await asyncio.wait_for(task, 3)
    return got, status


def test_a_driver_that_raises_in_open_is_retried_with_growing_backoff_until_it_opens(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "posbridge.scanners")
    unavailable = ScannerUnavailable("no device (plug it in)")
    source = ScriptedSource(opens=[unavailable, unavailable, unavailable, RuntimeError("driver bug")],
                            reads=[["OW7K2M9Q"]])
    got, status = asyncio.run(_run(source, until=1))
    assert got == ["OW7K2M9Q"]
    gaps = [b - a for a, b in zip(source.open_times, source.open_times[1:])]
    assert len(gaps) == 4
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09 and gaps[2] >= 0.19, gaps  # 0.05, 0.1, 0.2, 0.4 ...
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("no device (plug it in)" in w for w in warnings) == 1, "one line per distinct reason, not per retry"
    assert sum("RuntimeError: driver bug" in w for w in warnings) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == ["scanner scripted: connected"]
    assert status.scans == 1 and status.last_error is None


def test_errors_while_reading_reopen_the_device_and_the_task_survives_any_exception() -> None:
    source = ScriptedSource(
        opens=[],
        reads=[["A1"], ScannerGone("unplugged"), ["B2"], ValueError("garbage in driver"), ["C3"],
               KeyboardInterruptLike(), ["D4"]])
    got, status = asyncio.run(_run(source, until=4))
    assert got == ["A1", "B2", "C3", "D4"]
    assert status.reconnects == 3
    assert source.closes >= 3
    assert status.connected is False  # after stop


class KeyboardInterruptLike(Exception):
    """Any exception class a driver could raise."""


def test_an_exception_in_on_scan_is_logged_and_the_next_scan_still_arrives(caplog: pytest.LogCaptureFixture) -> None:
    source = ScriptedSource(opens=[], reads=[["BOOM"], ["OK"]])
    got: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()

        async def on_scan(event: ScanEvent) -> None:
            if event.text == "BOOM":
                raise RuntimeError("handler failed")
            got.append(event.text)
            stop.set()

        await asyncio.wait_for(supervise(source, on_scan, debounce=0, stop=stop,
                                         status=ScannerStatus("scripted", "test")), 3)

    asyncio.run(main())
    assert got == ["OK"]
    assert "handling a scan failed" in caplog.text


def test_the_same_text_within_the_debounce_window_is_one_scan_and_after_it_two() -> None:
    source = ScriptedSource(opens=[], reads=[["OW7K2M9Q"], ["OW7K2M9Q"], ["OTHER1"], ["OW7K2M9Q"]])
    got, status = asyncio.run(_run(source, seconds=0.5, debounce=10.0))
    assert got == ["OW7K2M9Q", "OTHER1"]
    assert status.scans == 2


def test_the_debounce_window_slides_from_the_last_time_the_text_was_seen() -> None:
    window = Debouncer(1.0)
    assert window.is_new("A", 100.0)
    assert not window.is_new("A", 100.8)
    assert not window.is_new("A", 101.6)  # 1.6 s after the first read, but 0.8 s after the last one
    assert window.is_new("A", 102.7)
    assert window.is_new("B", 102.8)


def test_a_repeat_after_the_debounce_window_is_a_second_scan() -> None:
    async def main() -> list[str]:
        source = ScriptedSource(opens=[], reads=[["SAME"]])
        got: list[str] = []
        stop = asyncio.Event()

        async def on_scan(event: ScanEvent) -> None:
            got.append(event.text)
            if len(got) == 2:
                stop.set()

        task = asyncio.create_task(supervise(source, on_scan, debounce=0.2, stop=stop,
                                             status=ScannerStatus("scripted", "test")))
        await asyncio.sleep(0.35)
        source.reads.append(["SAME"])
        await asyncio.wait_for(task, 3)
        return got

    assert asyncio.run(main()) == ["SAME", "SAME"]


def test_cancelling_the_task_closes_the_device() -> None:
    async def main() -> ScriptedSource:
        source = ScriptedSource(opens=[], reads=[])
        task = asyncio.create_task(supervise(source, _ignore, debounce=0, stop=asyncio.Event(),
                                             status=ScannerStatus("scripted", "test")))
        await asyncio.sleep(0.1)
        assert source.is_open
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return source

    source = asyncio.run(main())
    assert not source.is_open and source.closes >= 1


def test_a_source_that_is_exhausted_ends_supervision_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "posbridge.scanners")
    source = ScriptedSource(opens=[], reads=[["LAST"], SourceExhausted("standard input has ended")])
    got, status = asyncio.run(_run(source, seconds=3))
    assert got == ["LAST"]
    assert len(source.open_times) == 1, "no reopening of a stream that cannot come back"
    assert [r.getMessage() for r in caplog.records if "ended" in r.getMessage()] == [
        "scanner scripted: standard input has ended; no longer reading it"]


async def _ignore(event: ScanEvent) -> None:
    return None


def test_a_flapping_device_that_opens_then_fails_at_once_logs_one_problem_and_one_connect(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "posbridge.scanners")
    flaky = ScannerGone("USB transfer error on scanner 0c2e:0b8f (Input/Output Error); reopening the device")
    source = ScriptedSource(opens=[], reads=[["FIRST"], flaky, flaky, flaky, flaky, ["LAST"]])
    got, status = asyncio.run(_run(source, until=2))
    assert got == ["FIRST", "LAST"]
    assert status.reconnects == 4
    messages = [r.getMessage() for r in caplog.records]
    assert sum("transfer error" in m for m in messages) == 1
    assert messages.count("scanner scripted: connected") == 1
    assert messages.count("scanner scripted: connected again") == 1


def test_a_source_exhausted_at_open_is_not_retried() -> None:
    source = ScriptedSource(opens=[SourceExhausted("the video file has ended")], reads=[])
    got, status = asyncio.run(_run(source, seconds=3))
    assert got == [] and len(source.open_times) == 1 and status.last_error == "the video file has ended"
