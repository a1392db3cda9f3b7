"""Serial scanners: RS-232 adapters and USB scanners in CDC ("USB COM port emulation") mode.

The port is named by path, or found by USB ids through pyserial's ``comports()`` so it is found again when the
scanner is re-plugged into another socket and becomes ``ttyACM1``. Framing (how one scan ends) follows the
scanner's suffix setting; see :class:`Framer`. The source never writes to the port: probing unknown devices is
how other till agents upset scales and printers.
"""

from __future__ import annotations

import errno
import logging
import re
import time
from collections.abc import Callable, Iterable

import serial
import serial.tools.list_ports
from serial.tools.list_ports_common import ListPortInfo

from posbridge.config import SerialScanner
from posbridge.scanners import (INSTALL_UDEV_RULE, UDEV_RULE, ScanEvent, ScannerGone, ScannerUnavailable, decode_text,
                                is_blank)

log = logging.getLogger("posbridge.scanners.serial")

STX, ETX = 0x02, 0x03
# A partial code older than this when nothing more arrives is noise or a wrong suffix setting: drop it, so it is
# not glued in front of the next scan. Scanners send a whole code in one burst (milliseconds even at 9600 baud).
STALE_PARTIAL = 1.0
# read() returns at least this often, so the supervisor can stop and close the port promptly (a quarter second).
READ_WINDOW = 0.25

_TERMINATORS: dict[str, re.Pattern[bytes]] = {
    "cr": re.compile(rb"\r"),
    "lf": re.compile(rb"\n"),
    "crlf": re.compile(rb"\r\n"),
    "eol": re.compile(rb"\r\n|\r|\n"),
}
_FRAMING_HINT = {
    "cr": "a CR (0x0D) suffix",
    "lf": "an LF (0x0A) suffix",
    "crlf": "a CR LF suffix",
    "eol": "a CR, LF or CR LF suffix",
    "stx-etx": "STX (0x02) before and ETX (0x03) after each code",
}


class Framer:
    """Cuts a byte stream into scans. Pure: bytes and times in, frames out, no I/O.

    ``feed`` takes what arrived at ``now``; ``tick`` is called when nothing arrived. Rules:

    * ``cr``/``lf``/``crlf``: the terminator ends a frame; ``eol``: any of CR, LF, CR LF does.
    * ``stx-etx``: a frame is what lies between STX and ETX; bytes outside are dropped, a second STX restarts.
    * ``idle``: a frame ends when no byte arrived for ``idle_gap`` seconds.
    * Empty frames are dropped (a CR LF is one end, not an end and an empty scan).
    * More than ``max_length`` bytes without an end: the buffer is dropped with one log line and everything up to
      the next terminator (next STX, next gap) is dropped too, so the tail of an over-long code never poses as a
      scan of its own.
    * A partial frame with no byte for :data:`STALE_PARTIAL` seconds is dropped (line noise, wrong suffix).
    """

    def __init__(self, framing: str, *, max_length: int, idle_gap: float = 0.05, name: str = "serial") -> None:
        self.framing = framing
        self.max_length = max_length
        self.idle_gap = idle_gap
        self.name = name
        self._terminator = _TERMINATORS.get(framing)
        self._buffer = bytearray()
        self._discarding = False
        self._last_byte = 0.0
        self._warned_stale = False

    @property
    def pending(self) -> int:
        """Bytes of a frame not yet ended."""
        return len(self._buffer)

    def feed(self, data: bytes, now: float) -> list[bytes]:
        """Frames completed by ``data``."""
        if not data:
            return self.tick(now)
        frames = self.tick(now) if self.framing == "idle" else []
        self._last_byte = now
        self._buffer += data
        if self.framing == "idle":
            self._check_overflow()
        elif self.framing == "stx-etx":
            frames += self._cut_stx_etx()
        else:
            frames += self._cut_terminated()
        return frames

    def tick(self, now: float) -> list[bytes]:
        """Frames completed by silence (``idle``), and stale partial frames dropped (other framings)."""
        if not self._buffer and not self._discarding:
            return []
        quiet = now - self._last_byte
        if self.framing == "idle":
            if quiet < self.idle_gap:
                return []
            frame = bytes(self._buffer)
            self._buffer.clear()
            was_discarding, self._discarding = self._discarding, False
            return [] if was_discarding or not frame else [frame]
        if quiet < STALE_PARTIAL:
            return []
        self._discarding = False  # a silence ends an over-long code as surely as a terminator does
        if self._buffer:
            level = logging.DEBUG if self._warned_stale else logging.WARNING
            self._warned_stale = True
            log.log(level, "scanner %s: dropped %d bytes that never got their end (framing %r expects %s; "
                    "check the scanner's suffix setting or the framing key)", self.name, len(self._buffer),
                    self.framing, _FRAMING_HINT.get(self.framing, "an end"))
            self._buffer.clear()
        return []

    def _cut_terminated(self) -> list[bytes]:
        assert self._terminator is not None
        frames: list[bytes] = []
        start = 0
        for match in self._terminator.finditer(self._buffer):
            frame = bytes(self._buffer[start:match.start()])
            start = match.end()
            if self._discarding:
                self._discarding = False  # resynchronised: the rest of the over-long code ended here
                continue
            if len(frame) > self.max_length:
                self._overflow(len(frame))
                continue
            if frame:
                frames.append(frame)
        del self._buffer[:start]
        if self.framing == "crlf" and self._buffer.endswith(b"\r"):
            # keep a CR whose LF may come in the next read
            self._check_overflow(keep_tail=1)
        else:
            self._check_overflow()
        return frames

    def _cut_stx_etx(self) -> list[bytes]:
        frames: list[bytes] = []
        buffer = self._buffer
        while True:
            stx = buffer.find(STX)
            if stx < 0:
                buffer.clear()  # bytes outside a frame: noise, or a CR/LF the scanner adds after ETX
                break
            del buffer[:stx]
            next_stx = buffer.find(STX, 1)
            etx = buffer.find(ETX, 1)
            if etx >= 0 and (next_stx < 0 or etx < next_stx):
                frame = bytes(buffer[1:etx])
                del buffer[:etx + 1]
                if len(frame) > self.max_length:
                    self._overflow(len(frame))
                elif frame:
                    frames.append(frame)
                continue
            if next_stx >= 0:
                del buffer[:next_stx]  # a frame restarted before it ended: drop the unfinished one
                continue
            if len(buffer) - 1 > self.max_length:
                self._overflow(len(buffer) - 1)
                buffer.clear()
            break
        return frames

    def _check_overflow(self, keep_tail: int = 0) -> None:
        if len(self._buffer) - keep_tail > self.max_length:
            if not self._discarding:
                self._overflow(len(self._buffer))
            self._buffer.clear()
            self._discarding = True

    def _overflow(self, size: int) -> None:
        log.warning("scanner %s: dropped %d bytes without an end (more than max_length=%d); reading resumes at the "
                    "next end of a code", self.name, size, self.max_length)


def describe_ports(ports: Iterable[ListPortInfo]) -> str:
    """``/dev/ttyACM0 (0c2e:0b61 SER=123 Honeywell ...), /dev/ttyS0`` or ``none`` for error messages."""
    parts = []
    for port in ports:
        if port.vid is not None:
            serial_no = f" SER={port.serial_number}" if port.serial_number else ""
            label = " ".join(p for p in (port.manufacturer, port.product) if p)
            parts.append(f"{port.device} ({port.vid:04x}:{port.pid or 0:04x}{serial_no}{' ' + label if label else ''})")
        else:
            parts.append(port.device)
    return ", ".join(parts) or "none"


def find_port(ports: Iterable[ListPortInfo], vid: int, pid: int | None, serial_number: str | None) -> str | None:
    """The device path of the first port with these USB ids (lowest interface first), or None."""
    matches = [
        p for p in ports
        if p.vid == vid and (pid is None or p.pid == pid)
        and (serial_number is None or p.serial_number == serial_number)
    ]
    matches.sort(key=lambda p: (p.location or "", p.device))
    return matches[0].device if matches else None


class SerialSource:
    """A :class:`~posbridge.scanners.ScanSource` over pyserial. ``comports`` is injectable for tests."""

    def __init__(self, config: SerialScanner,
                 comports: Callable[[], list[ListPortInfo]] = serial.tools.list_ports.comports) -> None:
        self.name = config.name
        self.config = config
        self._comports = comports
        self._serial: serial.Serial | None = None
        self._framer = Framer(config.framing, max_length=config.max_length, idle_gap=config.idle_gap,
                              name=config.name)
        self.port: str | None = None

    def _resolve_port(self) -> str:
        config = self.config
        if config.vid is None:
            assert config.port
            return config.port
        found = find_port(self._comports(), config.vid, config.pid, config.serial_number)
        if found is None:
            wanted = f"{config.vid:04x}:{config.pid:04x}" if config.pid is not None else f"{config.vid:04x}:*"
            if config.serial_number:
                wanted += f" serial {config.serial_number!r}"
            raise ScannerUnavailable(
                f"no serial port with USB id {wanted} is plugged in (ports present: "
                f"{describe_ports(self._comports())}); plug the scanner in and check it is in USB-serial (CDC) "
                "mode, see drivers/README.md and `posbridge scanners list`")
        return found

    def open(self) -> None:
        config = self.config
        port = self._resolve_port()
        self.port = port
        handle = serial.Serial(
            baudrate=config.baudrate, bytesize=config.bytesize, parity=config.parity, stopbits=config.stopbits,
            timeout=max(0.005, config.idle_gap / 2) if config.framing == "idle" else 0.2, exclusive=True)
        handle.port = port
        try:
            handle.open()
        except (serial.SerialException, OSError) as exc:
            raise ScannerUnavailable(self._open_error(port, exc)) from exc
        self._serial = handle
        self._framer = Framer(config.framing, max_length=config.max_length, idle_gap=config.idle_gap,
                              name=config.name)
        log.debug("scanner %s: opened %s at %d baud, framing %s", self.name, port, config.baudrate, config.framing)

    def _open_error(self, port: str, exc: BaseException) -> str:
        code = getattr(exc, "errno", None)
        if code == errno.ENOENT:
            return (f"serial port {port} does not exist (ports present: {describe_ports(self._comports())}); plug "
                    "the scanner in, or configure vid/pid so it is found wherever it appears (`posbridge scanners "
                    "list` shows them)")
        if code in (errno.EACCES, errno.EPERM):
            return (f"permission denied on {port}: add the service user to the dialout group (`sudo usermod -aG "
                    f"dialout posbridge`, then restart the service) or install the udev rule {UDEV_RULE} "
                    f"(`{INSTALL_UDEV_RULE}`)")
        if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK):
            return (f"{port} is in use by another program (ModemManager, a terminal, another posbridge?); `fuser -v "
                    f"{port}` names it; the udev rule {UDEV_RULE} keeps ModemManager away")
        return f"cannot open serial port {port}: {exc}"

    def read(self) -> list[ScanEvent]:
        handle = self._serial
        if handle is None:
            raise ScannerGone("serial port is not open")
        deadline = time.monotonic() + READ_WINDOW
        events: list[ScanEvent] = []
        while True:
            try:
                chunk = handle.read(handle.in_waiting or 1)
            except (serial.SerialException, OSError) as exc:
                raise ScannerGone(f"serial port {self.port} went away ({exc}); waiting for it to come back") from exc
            now = time.monotonic()
            frames = self._framer.feed(chunk, now) if chunk else self._framer.tick(now)
            for frame in frames:
                text = decode_text(frame)
                if not is_blank(text):  # a lone suffix or padding between codes is no scan
                    events.append(ScanEvent(text=text, raw=frame, symbology=None, source=self.name))
            if events or now >= deadline:
                return events

    def close(self) -> None:
        handle, self._serial = self._serial, None
        if handle is not None:
            try:
                handle.close()
            except Exception:  # noqa: BLE001 - closing a vanished port may fail; nothing left to do
                log.debug("scanner %s: closing %s failed", self.name, self.port, exc_info=True)
