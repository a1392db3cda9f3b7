"""Serial scanners through a real pyserial on a pseudo-terminal: framing, garbage, unplug, discovery, errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from serial.tools.list_ports_common import ListPortInfo

from posbridge.config import SerialScanner
from posbridge.scanners import ScanEvent, ScannerUnavailable
from posbridge.scanners.serial import Framer, SerialSource
from posbridge.scanners.supervisor import ScannerStatus, supervise
from tests.support.pty import PtyScanner


def _config(**values: Any) -> SerialScanner:
    return SerialScanner.model_validate({"name": "front", "type": "serial", **values})


class Running:
    """A supervised serial source and the scans it delivered."""

    def __init__(self, source: SerialSource, debounce: float = 0.0) -> None:
        self.source = source
        self.events: list[ScanEvent] = []
        self.arrived = asyncio.Condition()
        self.stop = asyncio.Event()
        self.status = ScannerStatus(source.name, "serial")
        self.task = asyncio.create_task(supervise(source, self._on_scan, debounce=debounce, stop=self.stop,
                                                  status=self.status, backoff_initial=0.05, backoff_max=0.2))

    async def _on_scan(self, event: ScanEvent) -> None:
        async with self.arrived:
            self.events.append(event)
            self.arrived.notify_all()

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.events]

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[str]:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.events) >= count), timeout)
        return self.texts

    async def wait_connected(self, timeout: float = 5.0) -> None:
        for _ in range(int(timeout / 0.01)):
            if self.status.connected:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"never connected: {self.status.last_error}")

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 5)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


@pytest.fixture
def pty() -> Iterator[PtyScanner]:
    with PtyScanner() as scanner:
        yield scanner


@pytest.mark.parametrize(("framing", "wire", "expected"), [
    ("cr", b"OW7K2M9Q\rAB12CD34\r", ["OW7K2M9Q", "AB12CD34"]),
    ("lf", b"OW7K2M9Q\nAB12CD34\n", ["OW7K2M9Q", "AB12CD34"]),
    ("crlf", b"OW7K2M9Q\r\nAB12CD34\r\n", ["OW7K2M9Q", "AB12CD34"]),
    ("eol", b"OW7K2M9Q\rAB12CD34\nZZ99YY88\r\n", ["OW7K2M9Q", "AB12CD34", "ZZ99YY88"]),
    ("stx-etx", b"\x02OW7K2M9Q\x03\r\n\x02AB12CD34\x03", ["OW7K2M9Q", "AB12CD34"]),
])
def test_each_framing_turns_bytes_written_on_the_wire_into_scans(
        pty: PtyScanner, framing: str, wire: bytes, expected: list[str]) -> None:
    async def main() -> None:
        running = Running(SerialSource(_config(port=pty.path, framing=framing)))
        await running.wait_connected()
        pty.write(wire)
        assert await running.wait_for(len(expected)) == expected
        await asyncio.sleep(0.1)
        assert running.texts == expected, "no extra (empty) scans"
        await running.finish()

    run(main)


def test_idle_framing_ends_a_scan_after_the_idle_gap(pty: PtyScanner) -> None:
    async def main() -> None:
        running = Running(SerialSource(_config(port=pty.path, framing="idle", idle_gap="50ms")))
        await running.wait_connected()
        pty.write(b"OW7K")
        await asyncio.sleep(0.01)
        pty.write(b"2M9Q")  # within the gap: same scan
        await asyncio.sleep(0.3)
        pty.write(b"AB12CD34")
        assert await running.wait_for(2) == ["OW7K2M9Q", "AB12CD34"]
        await running.finish()

    run(main)


def test_a_code_split_across_several_writes_is_one_scan(pty: PtyScanner) -> None:
    async def main() -> None:
        running = Running(SerialSource(_config(port=pty.path, framing="crlf")))
        await running.wait_connected()
        for piece in (b"https://shop.example/", b"c/OW7K2M9Q\r", b"\n"):
            pty.write(piece)
            await asyncio.sleep(0.05)
        assert await running.wait_for(1) == ["https://shop.example/c/OW7K2M9Q"]
        await running.finish()

    run(main)


def test_utf8_is_decoded_as_utf8_and_anything_else_as_latin1_with_raw_bytes_kept(pty: PtyScanner) -> None:
    async def main() -> None:
        running = Running(SerialSource(_config(port=pty.path)))
        await running.wait_connected()
        pty.write("José-ñ\r\n".encode("utf-8") + "José-ñ\r\n".encode("latin-1"))
        await running.wait_for(1)
        await asyncio.sleep(0.2)
        await running.finish()
        return running.events

    async def both() -> None:
        events = await main()
        # the same text twice from one source is debounced only when debounce > 0; here both arrive
        assert [e.text for e in events] == ["José-ñ", "José-ñ"]
        assert events[0].raw == "José-ñ".encode("utf-8")
        assert events[1].raw == "José-ñ".encode("latin-1")
        assert all(e.source == "front" and e.symbology is None for e in events)

    run(both)


def test_a_megabyte_of_random_bytes_then_a_good_code_still_delivers_the_good_code(pty: PtyScanner) -> None:
    junk = random.Random(4).randbytes(1024 * 1024)

    async def main() -> None:
        running = Running(SerialSource(_config(port=pty.path, max_length=256)))
        await running.wait_connected()
        await asyncio.to_thread(pty.write, junk)
        await asyncio.sleep(1.3)  # the scanner is silent for a moment: a half-received frame is noise
        pty.scan("OW7K2M9Q")
        for _ in range(500):
            if "OW7K2M9Q" in running.texts:
                break
            await asyncio.sleep(0.01)
        assert running.texts[-1] == "OW7K2M9Q"
        assert running.status.last_error is None and running.status.connected
        await running.finish()

    run(main)


def test_an_over_long_line_is_dropped_with_a_log_line_and_reading_resynchronises_at_the_next_end(
        pty: PtyScanner, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        running = Running(SerialSource(_config(port=pty.path, max_length=64)))
        await running.wait_connected()
        await asyncio.to_thread(pty.write, b"X" * 10_000 + b"TAIL\r\n" + b"OW7K2M9Q\r\n")
        assert await running.wait_for(1) == ["OW7K2M9Q"]
        await asyncio.sleep(0.1)
        assert running.texts == ["OW7K2M9Q"], "the tail of the over-long code is not a scan"
        await running.finish()

    run(main)
    drops = [r for r in caplog.records if "more than max_length=64" in r.getMessage()]
    assert len(drops) == 1


def test_unplugging_and_replugging_reconnects_and_the_next_scan_arrives(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "posbridge.scanners")
    link = tmp_path / "usb-Honeywell_1900-if00"  # like /dev/serial/by-id: a stable name for a changing tty

    async def main() -> None:
        first = PtyScanner()
        link.symlink_to(first.path)
        running = Running(SerialSource(_config(port=str(link))))
        await running.wait_connected()
        first.scan("BEFORE01")
        await running.wait_for(1)
        first.write(b"HALF-A-CO")  # unplugged in the middle of a code
        await asyncio.sleep(0.05)
        first.unplug()
        link.unlink()
        for _ in range(300):
            if not running.status.connected:
                break
            await asyncio.sleep(0.01)
        assert not running.status.connected
        await asyncio.sleep(0.4)  # a few failed reopen attempts while the cable is out
        second = PtyScanner()
        link.symlink_to(second.path)
        await running.wait_connected()
        second.scan("AFTER002")
        assert await running.wait_for(2) == ["BEFORE01", "AFTER002"]
        assert running.status.reconnects == 1
        await running.finish()
        second.unplug()

    run(main)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("went away" in w for w in warnings)
    assert sum("does not exist" in w for w in warnings) == 1, "the absent port is logged once, not per retry"
    assert any("connected again" in r.getMessage() for r in caplog.records)


def _port(device: str, vid: int, pid: int, serial_number: str) -> ListPortInfo:
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number = vid, pid, serial_number
    info.manufacturer, info.product = "Honeywell", "1900G"
    return info


def test_a_port_is_found_by_usb_vid_pid_and_serial_number(pty: PtyScanner) -> None:
    ports = [_port("/dev/ttyACM0", 0x0C2E, 0x0B61, "OTHER"), _port(pty.path, 0x0C2E, 0x0B61, "17300B1234")]

    async def main() -> None:
        config = _config(vid="0c2e", pid="0b61", serial_number="17300B1234")
        running = Running(SerialSource(config, comports=lambda: ports))
        await running.wait_connected()
        assert running.source.port == pty.path
        pty.scan("OW7K2M9Q")
        assert await running.wait_for(1) == ["OW7K2M9Q"]
        await running.finish()

    run(main)


def test_an_absent_scanner_says_so_and_lists_the_ports_that_are_there() -> None:
    ports = [_port("/dev/ttyACM0", 0x05E0, 0x1200, "Z1")]
    source = SerialSource(_config(vid="0c2e", pid="0b61"), comports=lambda: ports)
    with pytest.raises(ScannerUnavailable) as caught:
        source.open()
    message = str(caught.value)
    assert "no serial port with USB id 0c2e:0b61" in message and "/dev/ttyACM0 (05e0:1200 SER=Z1" in message
    source.close()

    missing = SerialSource(_config(port="/dev/ttyPOSBRIDGE-MISSING"), comports=lambda: ports)
    with pytest.raises(ScannerUnavailable, match="does not exist .*ports present: /dev/ttyACM0"):
        missing.open()


@contextlib.contextmanager
def _as_user(uid: int) -> Iterator[None]:
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)


def test_permission_denied_names_the_dialout_group_and_the_udev_rule(pty: PtyScanner) -> None:
    source = SerialSource(_config(port=pty.path))
    os.chmod(pty.path, 0o600)
    context = _as_user(65534) if os.geteuid() == 0 else contextlib.nullcontext()
    with context, pytest.raises(ScannerUnavailable) as caught:
        source.open()
    assert "dialout" in str(caught.value) and "drivers/99-posbridge-scanners.rules" in str(caught.value)


def test_a_port_held_by_another_program_is_reported_busy(pty: PtyScanner) -> None:
    holder = SerialSource(_config(port=pty.path))
    holder.open()
    try:
        with pytest.raises(ScannerUnavailable, match="in use by another program"):
            SerialSource(_config(name="second", port=pty.path)).open()
    finally:
        holder.close()


def test_the_framer_drops_bytes_outside_stx_etx_and_restarts_on_a_second_stx() -> None:
    framer = Framer("stx-etx", max_length=100)
    assert framer.feed(b"noise\x02HALF\x02OW7K2M9Q\x03\r\n\x02AB", 0.0) == [b"OW7K2M9Q"]
    assert framer.feed(b"12\x03", 0.01) == [b"AB12"]


def test_the_framer_drops_a_stale_partial_code_instead_of_gluing_it_to_the_next_one() -> None:
    framer = Framer("eol", max_length=100)
    assert framer.feed(b"GARB", 0.0) == []
    assert framer.tick(2.0) == []
    assert framer.feed(b"OW7K2M9Q\r\n", 2.1) == [b"OW7K2M9Q"]
