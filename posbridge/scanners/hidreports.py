"""Decoding of HID POS scanned-data reports (usage page 0x8C). Pure: report bytes and times in, scans out.

The USB driver (``hid.py``), ``posbridge scanners decode`` and the tests share it, so a captured report file
decodes exactly as the live device would. Byte offsets count the report ID as byte 0 (what an interrupt-IN read
returns); the facts come from ``shared/reference/scanners.md`` section 1.

Where the fields are comes from the device's own report descriptor (:func:`posbridge.scanners.hiddescriptor.
pos_layout`): a report that does not fit it (another length, a byte count larger than the data field) is refused
with the byte counts, never decoded into a shorter text. Only when no descriptor can be had is the layout guessed
from the bytes among the known ones: Honeywell (AIM ID at 2-4, data at 5-60, Code ID at 61), the vendor variant
with one extra byte before the AIM ID (AIM at 3-5), and Newland (no AIM field, data at 2-57); a report the guess
cannot tell apart (zero where the AIM ID would be) is refused rather than guessed.

A long code comes in several reports, each with Decode Data Continued set but the last. A code whose last report
never comes (some firmware forgets it for a code of exactly one report's length) ends after ``gap`` seconds
without a report and is handed on like any other code, marked ``unfinished`` for the log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from posbridge.cards import AIM_SYMBOLOGIES
from posbridge.errors import ReportError
from posbridge.scanners import decode_text, is_blank
from posbridge.scanners.hiddescriptor import PosLayout, is_hid_pos, pos_layout, usage_pages

REPORT_ID_SCANNED_DATA = 0x02
POS_REPORT_SIZE = 64
MAX_CODE_BYTES = 64 * 1024
POS_GAP = 0.1  # s without a report after which an unfinished multi-report code ends

# AIM IDs whose modifier names a narrower symbology than the code character (the rest: cards.AIM_SYMBOLOGIES)
_AIM_EXACT = {"]C1": "gs1-128", "]E4": "ean8"}
# Honeywell Code ID (byte 61) -> symbology
_HONEYWELL_CODE_ID = {"s": "qr", "z": "aztec", "r": "pdf417", "w": "datamatrix", "j": "code128", "I": "gs1-128",
                      "d": "ean13", "c": "upca", "D": "ean8", "E": "upce", "b": "code39", "e": "itf",
                      "y": "gs1-databar", "a": "codabar", "i": "code93", "x": "maxicode"}

Variant = Literal["auto", "honeywell", "shifted-aim", "newland"]
VARIANTS: tuple[str, ...] = ("auto", "honeywell", "shifted-aim", "newland")

HONEYWELL = PosLayout("honeywell", 2, None, 1, aim_at=2, data_at=5, data_max=56, code_id_at=61)
SHIFTED_AIM = PosLayout("shifted-aim", 2, None, 1, aim_at=3, data_at=6, data_max=55)
NEWLAND = PosLayout("newland", 2, None, 1, aim_at=None, data_at=2, data_max=56, vendor_symbology_at=62)
KNOWN_LAYOUTS = {layout.name: layout for layout in (HONEYWELL, SHIFTED_AIM, NEWLAND)}


@dataclass(frozen=True)
class DecodedScan:
    """One complete code. ``raw`` is every report it came in, concatenated; ``data`` the decoded-data bytes.

    ``unfinished``: the code ended by silence, its last report (continued flag clear) never came.
    """

    text: str
    data: bytes
    raw: bytes
    symbology: str | None = None
    aim: str | None = None
    unfinished: bool = False


def symbology_from_aim(aim: str | None) -> str | None:
    """``"]Q1"`` -> ``"qr"``, with the names ``cards.py`` gives; None for an unknown or absent AIM ID."""
    if not aim or len(aim) < 2 or aim[0] != "]":
        return None
    if aim[:3] in _AIM_EXACT:
        return _AIM_EXACT[aim[:3]]
    known = AIM_SYMBOLOGIES.get(aim[1])
    return known[0] if known else None


def guess_layout(report: bytes, variant: Variant = "auto") -> PosLayout:
    """The known layout a report (64 bytes, ID 2) seems to use, without a descriptor.

    Raises :class:`ReportError` when it cannot be told: zero bytes where the AIM ID would be are a Honeywell
    report with no AIM ID as much as a Newland report whose data starts with NUL, and the two give different
    texts (the Newland reading cuts three bytes off the member id).
    """
    if variant != "auto":
        return KNOWN_LAYOUTS[variant]
    if report[2] == 0x5D:
        return HONEYWELL
    if report[3] == 0x5D:
        return SHIFTED_AIM
    if report[1] and report[2] == 0:
        raise ReportError(f"byte 1 says {report[1]} data bytes, but byte 2 is 0x00: a Honeywell-style report "
                          "without an AIM ID, or a Newland one whose data starts with NUL; without the scanner's "
                          "report descriptor the two cannot be told apart (give --descriptor, or --variant)")
    return NEWLAND


class HidPosDecoder:
    """Reassembles HID POS scanned-data reports into codes (a 300-character URL spans six reports).

    ``layout`` comes from the device's report descriptor; without one (``None``) each code's first report picks
    one of the known layouts (``variant``, or ``"auto"``: by where the AIM ID's ``]`` is).
    """

    def __init__(self, layout: PosLayout | None = None, *, variant: Variant = "auto", gap: float = POS_GAP) -> None:
        self.layout = layout
        self.variant = variant
        self.gap = gap
        self._parts: list[bytes] = []
        self._reports: list[bytes] = []
        self._current: PosLayout | None = None
        self._aim: str | None = None
        self._symbology: str | None = None
        self._last = 0.0

    @classmethod
    def from_descriptor(cls, descriptor: bytes, *, gap: float = POS_GAP) -> "HidPosDecoder":
        """A decoder for the scanned-data report the descriptor declares (:class:`DescriptorError` if none)."""
        return cls(pos_layout(descriptor), gap=gap)

    @property
    def pending(self) -> bool:
        """True while a code is half received (reports with the continued flag set)."""
        return bool(self._reports)

    def reset(self) -> None:
        """Forget a half-received code (the device went away in the middle of it)."""
        self._parts, self._reports, self._current, self._aim, self._symbology = [], [], None, None, None

    def time_left(self, now: float) -> float | None:
        """Seconds until a half-received code ends by silence; None when nothing is pending."""
        return max(0.0, self._last + self.gap - now) if self._reports else None

    def expire(self, now: float) -> list[DecodedScan]:
        """The half-received code, ended, if no report came for ``gap`` seconds (else ``[]``)."""
        if self._reports and now - self._last >= self.gap:
            return self._finish(unfinished=True)
        return []

    def flush(self) -> list[DecodedScan]:
        """End of input (a capture file): a half-received code ends as the driver would end it after the gap."""
        return self._finish(unfinished=True) if self._reports else []

    def feed(self, report: bytes, now: float = 0.0) -> list[DecodedScan]:
        """The codes completed by this report (or by the silence before it); ``[]`` for other reports.

        Raises :class:`ReportError` for a report that cannot be what the device sends, naming the byte counts.
        The half-received code is dropped with it, so its pieces are never glued to the next card.
        """
        report = bytes(report)
        done = self.expire(now)
        if not report:
            raise ReportError("empty report")
        layout = self.layout
        if layout is not None and layout.report_id is not None and report[0] != layout.report_id:
            return done  # status, trigger or vendor reports: not data
        if layout is None:
            if report[0] != REPORT_ID_SCANNED_DATA:
                return done
            if len(report) > POS_REPORT_SIZE:
                raise ReportError(f"report of {len(report)} bytes; HID POS reports are {POS_REPORT_SIZE}")
        elif layout.size is not None and len(report) != layout.size:
            self.reset()
            raise ReportError(f"report {report[0]} of {len(report)} bytes does not fit the scanner's report "
                              f"descriptor, which makes it {layout.size} bytes ({layout.describe()})")
        received = len(report)
        if layout is None:
            report = report.ljust(POS_REPORT_SIZE, b"\0")  # captures may drop trailing zeros
            if len(report) > 1 and report[1] > HONEYWELL.data_max:
                self.reset()
                raise ReportError(f"byte 1 (data length) is 0x{report[1]:02x} = {report[1]}; at most "
                                  f"{HONEYWELL.data_max} data bytes fit in a HID POS report")
            try:
                layout = self._current or guess_layout(report, self.variant)
            except ReportError:
                self.reset()
                raise
        count = report[layout.count_at] if layout.count_at is not None else None
        if count is not None and count > layout.data_max:
            self.reset()
            raise ReportError(f"byte {layout.count_at} (data length) is 0x{count:02x} = {count}; at most "
                              f"{layout.data_max} data bytes fit in a {layout.name} report")
        if count is not None and received < layout.data_at + count:
            self.reset()
            raise ReportError(f"report of {received} bytes, but byte {layout.count_at} says {count} data bytes "
                              f"from byte {layout.data_at}: the report was cut short (a truncated capture line?)")
        if not self._reports:
            self._start(report, layout)
        field = report[layout.data_at:layout.data_at + layout.data_max]
        self._parts.append(field[:count] if count is not None else field.rstrip(b"\0"))
        self._reports.append(report[:received])
        self._last = now
        if sum(len(p) for p in self._parts) > MAX_CODE_BYTES:
            self.reset()
            raise ReportError(f"more than {MAX_CODE_BYTES} bytes without a last report (the continued flag was "
                              "never clear)")
        if layout.continued is not None and report[layout.continued[0]] & layout.continued[1]:
            return done
        return done + self._finish(unfinished=False)

    def _start(self, report: bytes, layout: PosLayout) -> None:
        self._current = layout
        if layout.aim_at is not None and report[layout.aim_at] == 0x5D:
            self._aim = report[layout.aim_at:layout.aim_at + 3].decode("latin-1")
        code_id = chr(report[layout.code_id_at]) if layout.code_id_at is not None else ""
        self._symbology = _HONEYWELL_CODE_ID.get(code_id) or symbology_from_aim(self._aim)

    def _finish(self, *, unfinished: bool) -> list[DecodedScan]:
        data = b"".join(self._parts)
        scan = DecodedScan(text=decode_text(data), data=data, raw=b"".join(self._reports), symbology=self._symbology,
                           aim=self._aim, unfinished=unfinished)
        self.reset()
        return [] if is_blank(scan.text) else [scan]


_SEPARATORS = re.compile(r"[\s:]+")
_HEX_PAIR = re.compile(r"[0-9a-fA-F]{2}")
_TIME = re.compile(r"^\s*(\d+\.\d+)\s+")


def parse_hex_lines(lines: Iterable[str]) -> Iterator[tuple[int, float | None, bytes]]:
    """(line number, time, bytes) for each report in a capture.

    A line is hex bytes (spaces or colons between them allowed, ``0x`` prefixes too), optionally preceded by the
    time it was captured in seconds with a decimal point (``0.1250 02 38 5d ...``, as Wireshark and usbmon print
    it); ``#`` starts a comment. Raises :class:`ReportError` naming the line and the first bad byte.
    """
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        at = None
        timed = _TIME.match(text)
        if timed:
            at, text = float(timed.group(1)), text[timed.end():]
        out = bytearray()
        for token in _SEPARATORS.split(text):
            if token.lower().startswith("0x"):
                token = token[2:]
            for start in range(0, len(token), 2):
                pair = token[start:start + 2]
                if not _HEX_PAIR.fullmatch(pair):
                    raise ReportError(f"line {number}: {pair!r} (byte {len(out)}) is not a hex byte"
                                      + (" (odd number of hex digits)" if len(pair) == 1 else ""))
                out.append(int(pair, 16))
        yield number, at, bytes(out)


__all__ = ["DecodedScan", "HidPosDecoder", "KNOWN_LAYOUTS", "PosLayout", "VARIANTS", "guess_layout", "is_hid_pos",
           "parse_hex_lines", "symbology_from_aim", "usage_pages"]
