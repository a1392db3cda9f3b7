"""Decoding of USB HID reports from barcode scanners. Pure: report bytes in, scans out, no device I/O.

The USB driver (``hid.py``), ``posbridge scanners decode`` and the tests share it, so a captured report file
decodes exactly as the live device would. Byte offsets count the report ID as byte 0 (what an interrupt-IN read
returns); the facts come from ``shared/reference/scanners.md`` sections 1 and 2.

* HID POS (usage page 0x8C), report ID 2, 64 bytes, byte 1 = number of data bytes in this report, byte 63 bit 0
  = another report follows. Layouts: Honeywell (AIM ID at 2-4, data at 5-60, Code ID at 61), the vendor variant
  with one extra byte before the AIM ID (AIM at 3-5), and Newland (no AIM field, data at 2-57, symbology at 62).
* Keyboard (boot protocol), 8 bytes: modifiers, reserved, six key usages. Characters come from the layout the
  *scanner* is set to (``posbridge.layouts``); a key counts when it appears in a report and was not in the
  previous one, as Linux ``usbkbd.c`` does, so "00" (press, release, press, release) is two zeros.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from posbridge import layouts
from posbridge.cards import AIM_SYMBOLOGIES

log = logging.getLogger("posbridge.scanners.hid")

REPORT_ID_SCANNED_DATA = 0x02
POS_REPORT_SIZE = 64
CONTINUED_AT = 63
MAX_CODE_BYTES = 64 * 1024
HID_POS_USAGE_PAGE = 0x8C
KEYBOARD_GAP = 0.1  # a keyboard-mode scan ends after this long without a report, even without Enter
ERROR_ROLL_OVER = 0x01
UNKNOWN_KEY = "\ufffd"  # a key the layout cannot type: keep the gap visible, never shorten an id silently

# AIM IDs whose modifier names a narrower symbology than the code character (the rest: cards.AIM_SYMBOLOGIES)
_AIM_EXACT = {"]C1": "gs1-128", "]E4": "ean8"}
# Honeywell Code ID (byte 61) -> symbology
_HONEYWELL_CODE_ID = {"s": "qr", "z": "aztec", "r": "pdf417", "w": "datamatrix", "j": "code128", "I": "gs1-128",
                      "d": "ean13", "c": "upca", "D": "ean8", "E": "upce", "b": "code39", "e": "itf",
                      "y": "gs1-databar", "a": "codabar", "i": "code93", "x": "maxicode"}

Variant = Literal["auto", "honeywell", "shifted-aim", "newland"]


class ReportError(ValueError):
    """A report that cannot be what the device is supposed to send. The message says which byte is wrong."""


@dataclass(frozen=True)
class DecodedScan:
    """One complete code. ``raw`` is every report it came in, concatenated; ``data`` the decoded-data bytes."""

    text: str
    data: bytes
    raw: bytes
    symbology: str | None = None
    aim: str | None = None


@dataclass(frozen=True)
class PosLayout:
    """Where the fields of a scanned-data report are, for one family of devices."""

    name: str
    aim_at: int | None
    data_at: int
    data_max: int
    code_id_at: int | None = None


HONEYWELL = PosLayout("honeywell", aim_at=2, data_at=5, data_max=56, code_id_at=61)
SHIFTED_AIM = PosLayout("shifted-aim", aim_at=3, data_at=6, data_max=55)
NEWLAND = PosLayout("newland", aim_at=None, data_at=2, data_max=56)
LAYOUTS = {layout.name: layout for layout in (HONEYWELL, SHIFTED_AIM, NEWLAND)}


def decode_text(data: bytes) -> str:
    """UTF-8 when the bytes are valid UTF-8, else ISO-8859-1 (what many scanners and wallet passes send).

    Every source uses this one rule (serial and stdin import it from here), so one code reads the same everywhere.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def symbology_from_aim(aim: str | None) -> str | None:
    """``"]Q1"`` -> ``"qr"``, with the names ``cards.py`` gives; None for an unknown or absent AIM ID."""
    if not aim or len(aim) < 2 or aim[0] != "]":
        return None
    if aim[:3] in _AIM_EXACT:
        return _AIM_EXACT[aim[:3]]
    known = AIM_SYMBOLOGIES.get(aim[1])
    return known[0] if known else None


def _layout_for(report: bytes, variant: Variant) -> PosLayout:
    if variant != "auto":
        return LAYOUTS[variant]
    if report[2] == 0x5D:
        return HONEYWELL
    if report[3] == 0x5D:
        return SHIFTED_AIM
    return NEWLAND


class HidPosDecoder:
    """Reassembles HID POS scanned-data reports into codes (a 300-character URL spans six reports).

    ``variant="auto"`` tells the layouts apart by where the AIM ID's ``]`` is; the driver passes ``"newland"``
    for Newland's vendor id, whose data may itself start with ``]`` when an AIM prefix is configured.
    """

    def __init__(self, variant: Variant = "auto") -> None:
        self.variant = variant
        self._parts: list[bytes] = []
        self._reports: list[bytes] = []
        self._layout: PosLayout | None = None
        self._aim: str | None = None
        self._code_id: str | None = None

    @property
    def pending(self) -> bool:
        """True while a code is half received (reports with the continued flag set)."""
        return bool(self._reports)

    def reset(self) -> None:
        """Forget a half-received code (the device went away in the middle of it)."""
        self._parts, self._reports, self._layout, self._aim, self._code_id = [], [], None, None, None

    def feed(self, report: bytes) -> DecodedScan | None:
        """The completed code, or None (more reports to come, or not a scanned-data report)."""
        report = bytes(report)
        if not report:
            raise ReportError("empty report")
        if report[0] != REPORT_ID_SCANNED_DATA:
            return None  # status, trigger or vendor reports: not data
        if len(report) > POS_REPORT_SIZE:
            raise ReportError(f"report of {len(report)} bytes; HID POS reports are {POS_REPORT_SIZE}")
        received = len(report)
        report = report.ljust(POS_REPORT_SIZE, b"\0")  # captures may drop trailing zeros
        layout = self._layout or _layout_for(report, self.variant)
        count = report[1]
        if count > layout.data_max:
            self.reset()
            raise ReportError(f"byte 1 (data length) is 0x{count:02x} = {count}; at most {layout.data_max} "
                              f"data bytes fit in a {layout.name} report")
        if received < layout.data_at + count:
            self.reset()
            raise ReportError(f"report of {received} bytes, but byte 1 says {count} data bytes from byte "
                              f"{layout.data_at}: the report was cut short (a truncated capture line?)")
        if not self._reports:
            self._layout = layout
            if layout.aim_at is not None and report[layout.aim_at] == 0x5D:
                self._aim = report[layout.aim_at:layout.aim_at + 3].decode("latin-1")
            if layout.code_id_at is not None and report[layout.code_id_at]:
                self._code_id = chr(report[layout.code_id_at])
        self._parts.append(report[layout.data_at:layout.data_at + count])
        self._reports.append(report)
        if sum(len(p) for p in self._parts) > MAX_CODE_BYTES:
            self.reset()
            raise ReportError(f"more than {MAX_CODE_BYTES} bytes without a last report (byte 63 bit 0 never 0)")
        if report[CONTINUED_AT] & 0x01:
            return None
        data = b"".join(self._parts)
        raw = b"".join(self._reports)
        symbology = _HONEYWELL_CODE_ID.get(self._code_id or "") or symbology_from_aim(self._aim)
        scan = DecodedScan(text=decode_text(data), data=data, raw=raw, symbology=symbology, aim=self._aim)
        self.reset()
        return scan


class KeyboardDecoder:
    """Boot-protocol keyboard reports -> scans, with the scanner's layout.

    A scan ends at Enter, keypad Enter or Tab, or :data:`KEYBOARD_GAP` seconds after the last report (a lost
    Enter must not glue two cards together). Ctrl+key gives the control character (GS = Ctrl+] on US).
    ErrorRollOver reports (all six keys 0x01) carry no key state and are ignored.
    """

    def __init__(self, layout: str, *, gap: float = KEYBOARD_GAP, max_length: int = 4096) -> None:
        layouts.char_for(layout, 0x04)  # fail early on an unknown layout name
        self.layout = layout
        self.gap = gap
        self.max_length = max_length
        self._down: set[int] = set()
        self._chars: list[str] = []
        self._reports: list[bytes] = []
        self._last = 0.0

    @property
    def pending(self) -> bool:
        return bool(self._chars)

    def time_left(self, now: float) -> float | None:
        """Seconds until a pending scan ends by silence; None when nothing is pending."""
        return max(0.0, self._last + self.gap - now) if self._chars else None

    def reset(self) -> None:
        self._down.clear()
        self._chars.clear()
        self._reports.clear()

    def feed(self, report: bytes, now: float) -> list[DecodedScan]:
        """Scans completed by this report (or by the silence before it)."""
        report = bytes(report)
        if len(report) < 8:
            raise ReportError(f"keyboard report of {len(report)} bytes; boot-protocol reports are 8 bytes")
        done = self.expire(now)
        self._last = now
        keys = report[2:8]
        if all(k == ERROR_ROLL_OVER for k in keys):
            return done
        modifiers = report[0]
        held = [k for k in keys if k > 3]  # usages 0-3 are no key, rollover, POST fail, undefined (usbkbd.c)
        pressed = [k for k in held if k not in self._down]
        self._down = set(held)
        if pressed or self._chars:
            self._reports.append(report[:8])
        for usage in pressed:
            if layouts.is_terminator(usage):
                done += self._end()
            else:
                self._chars.append(self._char(usage, modifiers))
                if len(self._chars) > self.max_length:
                    log.warning("keyboard scanner typed more than %d characters without Enter; dropped them",
                                self.max_length)
                    self._chars.clear()
                    self._reports.clear()
        return done

    def _char(self, usage: int, modifiers: int) -> str:
        if modifiers & (layouts.LEFT_CTRL | layouts.RIGHT_CTRL):
            base = layouts.char_for(self.layout, usage, 0)
            if base and "@" <= base.upper() <= "_":
                return chr(ord(base.upper()) - 0x40)
            return UNKNOWN_KEY
        return layouts.char_for(self.layout, usage, modifiers) or UNKNOWN_KEY

    def expire(self, now: float) -> list[DecodedScan]:
        """The pending scan, if no report came for ``gap`` seconds."""
        if self._chars and now - self._last >= self.gap:
            return self._end()
        return []

    def flush(self) -> list[DecodedScan]:
        """End of input (a capture file): whatever is pending is a scan."""
        return self._end()

    def _end(self) -> list[DecodedScan]:
        text = "".join(self._chars)
        raw = b"".join(self._reports)
        self._chars.clear()
        self._reports.clear()
        if not text:
            return []
        return [DecodedScan(text=text, data=text.encode("utf-8"), raw=raw)]


def usage_pages(descriptor: bytes) -> set[int]:
    """Usage pages a HID report descriptor mentions (global Usage Page items and 32-bit extended usages)."""
    pages: set[int] = set()
    i = 0
    while i < len(descriptor):
        prefix = descriptor[i]
        if prefix == 0xFE:  # long item: size in the next byte
            i += 3 + (descriptor[i + 1] if i + 1 < len(descriptor) else 0)
            continue
        size = (0, 1, 2, 4)[prefix & 0x03]
        value = int.from_bytes(descriptor[i + 1:i + 1 + size], "little")
        tag_type = prefix & 0xFC
        if tag_type == 0x04:  # global: Usage Page
            pages.add(value)
        elif tag_type in (0x08, 0x18, 0x28) and size == 4:  # local Usage/Min/Max with the page in the high half
            pages.add(value >> 16)
        i += 1 + size
    return pages


def is_hid_pos(descriptor: bytes) -> bool:
    """True when the report descriptor declares the Bar Code Scanner usage page (0x8C)."""
    return HID_POS_USAGE_PAGE in usage_pages(descriptor)


_SEPARATORS = re.compile(r"[\s:]+")
_HEX_PAIR = re.compile(r"[0-9a-fA-F]{2}")


def parse_hex_lines(lines: Iterable[str]) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) for each report in a capture: hex digits, spaces/colons allowed, ``#`` comments.

    Raises :class:`ReportError` naming the line and the first bad byte.
    """
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        out = bytearray()
        for token in _SEPARATORS.split(text):
            if token.lower().startswith("0x"):
                token = token[2:]
            for start in range(0, len(token), 2):
                pair = token[start:start + 2]
                if not _HEX_PAIR.fullmatch(pair):
                    where = f"byte {len(out)}"
                    raise ReportError(f"line {number}: {pair!r} ({where}) is not a hex byte"
                                      + (" (odd number of hex digits)" if len(pair) == 1 else ""))
                out.append(int(pair, 16))
        yield number, bytes(out)
