"""Scanner inputs: serial, USB HID (HID POS and keyboard), camera and stdin.

Every driver is a :class:`ScanSource`: a small blocking object (pyserial, pyusb and OpenCV all block) that the
supervisor runs in a worker thread. A source never decides what happens after an error: it raises, and the
supervisor logs once, waits with backoff and reopens. That keeps each driver a plain loop over its device.

This module holds what every driver shares, so no driver imports another: the :class:`ScanEvent` they produce,
the one bytes-to-text rule (:func:`decode_text`), the rule for what is not a scan at all (:func:`is_blank`), the
errors of the :class:`ScanSource` contract (defined in :mod:`posbridge.errors`) and the udev rule's path.
Which scanner types exist, and which driver reads each, is said once: by the settings classes in
:data:`posbridge.config.SCANNER_TYPES` (each names its driver and its doctor check).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from posbridge.errors import ScannerGone, ScannerUnavailable, SourceExhausted

#: The udev rules file shipped in ``drivers/`` (group access for scanners, ModemManager kept away).
UDEV_RULE = "drivers/99-posbridge-scanners.rules"
#: The shell commands that install :data:`UDEV_RULE`, for messages.
INSTALL_UDEV_RULE = (f"sudo cp {UDEV_RULE} /etc/udev/rules.d/ && sudo udevadm control --reload "
                     "&& sudo udevadm trigger, then re-plug the scanner")

# What devices put around a code: whitespace, NUL padding of fixed-size reports, STX/ETX framing.
_NOT_CONTENT = " \t\r\n\x0b\x0c\x00\x02\x03\x1c\x1d\x1e\x1f\x85\xa0"


@dataclass(frozen=True)
class ScanEvent:
    """One read of one code by one scanner.

    ``text`` is the code's own content as text (framing removed, nothing else; the same rule for every source:
    :func:`decode_text` of the bytes, or the decoder's transcoding of them), ``raw`` the bytes it came in,
    ``symbology`` a lower-case name ("qr", "aztec", "pdf417", "code128", "ean13", "datamatrix"...) when the
    device said which, ``source`` the configured scanner name, ``at`` the wall-clock time (epoch s), ``aim``
    the AIM symbology identifier (``"]Q3"``: a GS1 QR code) when the device reported it apart from the text.
    """

    text: str
    raw: bytes
    symbology: str | None
    source: str
    at: float = field(default_factory=time.time)
    aim: str | None = None


def decode_text(data: bytes) -> str:
    """UTF-8 when the bytes are valid UTF-8, else ISO-8859-1 (what many scanners and wallet passes send).

    Every source uses this one rule, so one code reads the same from a serial port, a USB report or stdin.
    Never fails: every byte string is valid ISO-8859-1.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def is_blank(text: str) -> bool:
    """True when ``text`` holds nothing but whitespace, NUL padding, STX/ETX framing or separators.

    Such a read is never a scan: a terminator sent on its own, a padded empty report. Drivers drop it, the
    supervisor does not count it, the scan hub never publishes it (so it never replaces ``/v1/scans/last``).
    """
    return not text.strip(_NOT_CONTENT)


class ScanSource(Protocol):
    """What a driver offers the supervisor. All methods block; each is called from one worker thread.

    The contract (``tests/test_scanner_contract.py`` holds every driver to it): ``open`` raises
    :class:`ScannerUnavailable` with a reason and a fix; ``read`` waits up to about a second and returns the
    complete scans (``[]`` when idle), one event per code, never a blank one; ``read`` before ``open`` or after
    ``close`` raises :class:`ScannerGone`; an unplugged device raises :class:`ScannerGone` (never :class:`SourceExhausted`) and can be
    opened again once it is back; a source that has ended for good raises :class:`SourceExhausted` from every
    ``read`` after its last code; ``close`` never raises and may be called twice or after a failed ``open``.
    """

    name: str

    def open(self) -> None:
        """Open the device. Raises :class:`ScannerUnavailable` with a reason and a fix."""

    def read(self) -> list[ScanEvent]:
        """Wait up to about a second for input; return complete scans (``[]`` when idle).

        Raises :class:`ScannerGone` when the device disappeared; any other exception is treated the same way.
        """

    def close(self) -> None:
        """Release the device. Must not raise, and must be safe to call twice or after a failed open."""


__all__ = ["INSTALL_UDEV_RULE", "UDEV_RULE", "ScanEvent", "ScanSource", "ScannerGone", "ScannerUnavailable",
           "SourceExhausted", "decode_text", "is_blank"]
