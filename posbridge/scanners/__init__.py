"""Scanner inputs: serial, USB HID (HID POS and keyboard), camera and stdin.

Every driver is a :class:`ScanSource`: a small blocking object (pyserial, pyusb and OpenCV all block) that the
supervisor runs in a worker thread. A source never decides what happens after an error: it raises, and the
supervisor logs once, waits with backoff and reopens. That keeps each driver a plain loop over its device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ScanEvent:
    """One read of one code by one scanner.

    ``text`` is the decoded text as the device delivered it (framing removed, nothing else), ``raw`` the bytes
    it came in, ``symbology`` a lower-case name ("qr", "aztec", "pdf417", "code128", "ean13", "datamatrix"...)
    when the device said which, ``source`` the configured scanner name, ``at`` the wall-clock time (epoch s).
    """

    text: str
    raw: bytes
    symbology: str | None
    source: str
    at: float = field(default_factory=time.time)


class ScannerUnavailable(Exception):
    """The device cannot be opened now (absent, permission denied, busy).

    The message says what is wrong *and* what to do ("add the service user to dialout", "install the udev rule
    drivers/99-posbridge-scanners.rules"). The supervisor retries with backoff.
    """


class ScannerGone(Exception):
    """The device went away while open (unplugged, camera vanished). The supervisor reopens it."""


@runtime_checkable
class ScanSource(Protocol):
    """What a driver offers the supervisor. All methods block; each is called from one worker thread."""

    name: str

    def open(self) -> None:
        """Open the device. Raises :class:`ScannerUnavailable` with a reason and a fix."""

    def read(self) -> list[ScanEvent]:
        """Wait up to about a second for input; return complete scans (``[]`` when idle).

        Raises :class:`ScannerGone` when the device disappeared; any other exception is treated the same way.
        """

    def close(self) -> None:
        """Release the device. Must not raise, and must be safe to call twice or after a failed open."""
