"""The stdin source: one line is one scan; the end of input ends the source once, without reconnecting."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

import pytest

from posbridge.config import StdinScanner
from posbridge.scanners import ScanEvent, SourceExhausted
from posbridge.scanners.stdin import StdinSource
from posbridge.scanners.supervisor import ScannerStatus, supervise

CONFIG = StdinScanner(name="stdin", type="stdin")


def _pipe_source() -> tuple[StdinSource, int]:
    read_end, write_end = os.pipe()
    return StdinSource(CONFIG, stream=os.fdopen(read_end, "rb", buffering=0)), write_end


def test_each_line_is_a_scan_crlf_and_blank_lines_are_dropped_and_an_unterminated_last_line_counts() -> None:
    source, writer = _pipe_source()
    source.open()
    os.write(writer, "OW7K2M9Q\r\n\n  \nJos\xe9\nAB12".encode("latin-1"))
    os.close(writer)
    events: list[ScanEvent] = []
    with pytest.raises(SourceExhausted, match="standard input has ended"):
        for _ in range(10):
            events += source.read()
    assert [e.text for e in events] == ["OW7K2M9Q", "José", "AB12"]
    assert events[1].raw == b"Jos\xe9"
    source.close()
    with pytest.raises(SourceExhausted):
        source.open()


def test_a_read_waits_at_most_about_a_second_so_the_process_can_always_stop() -> None:
    source, writer = _pipe_source()
    source.open()
    started = time.monotonic()
    assert source.read() == []
    assert time.monotonic() - started < 1.5
    os.close(writer)


def test_under_the_supervisor_end_of_input_stops_that_source_with_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "posbridge.scanners")
    source, writer = _pipe_source()

    def type_and_leave() -> None:
        time.sleep(0.1)
        os.write(writer, b"OW7K2M9Q\n")
        time.sleep(0.1)
        os.close(writer)

    async def main() -> tuple[list[str], ScannerStatus]:
        got: list[str] = []
        status = ScannerStatus("stdin", "stdin")

        async def on_scan(event: ScanEvent) -> None:
            got.append(event.text)

        threading.Thread(target=type_and_leave).start()
        await asyncio.wait_for(supervise(source, on_scan, debounce=1.5, stop=asyncio.Event(), status=status), 10)
        return got, status

    got, status = asyncio.run(main())
    assert got == ["OW7K2M9Q"]
    assert status.reconnects == 0 and status.connected is False
    ended = [r.getMessage() for r in caplog.records if "ended" in r.getMessage()]
    assert ended == ["scanner stdin: standard input has ended; no longer reading it"]
