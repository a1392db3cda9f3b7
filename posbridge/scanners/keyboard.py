"""Decoding of keyboard-mode scanners: USB boot-protocol reports -> scans. Pure: report bytes and times in.

A scanner in keyboard mode types its code: 8-byte reports of modifiers, a reserved byte and up to six key usages
(``shared/reference/scanners.md`` section 2). Characters come from the layout the *scanner* is set to
(:mod:`posbridge.layouts`); a key counts when it appears in a report and was not in the previous one, as Linux
``usbkbd.c`` does, so "00" (press, release, press, release) is two zeros. What callers rely on:

* **Alt-code ("ALT mode") characters** are decoded whatever the layout: Alt held, keypad digits, Alt released
  types one character, ``Alt+0nnn`` from Windows-1252 and ``Alt+nnn`` from the scanner's OEM code page (437 or
  850) (:func:`posbridge.layouts.alt_code_char`). Scanners offer this mode precisely so the text does not depend
  on the layout.
* **A scan ends** at Enter, keypad Enter, Tab, a control chord that types CR, LF or Tab (Ctrl+M, Ctrl+J,
  Ctrl+Shift+J..., or their Alt codes), or :data:`KEYBOARD_GAP` seconds after the last report (a lost Enter must
  not glue two cards together).
* **Nothing else is a scan**: a report holding only modifiers, only a control chord or only whitespace, sent after
  a scan ended, ends nothing and starts nothing; a scan whose text is blank (:func:`posbridge.scanners.is_blank`)
  is dropped. Other control chords are data (GS = Ctrl+] on US, the GS1 separator).
* ErrorRollOver reports (all six keys 0x01) carry no key state and are ignored. A key the layout cannot type
  leaves U+FFFD in the text, so an id is never shortened silently.
"""

from __future__ import annotations

import logging

from posbridge import layouts
from posbridge.errors import ReportError
from posbridge.scanners import is_blank
from posbridge.scanners.hidreports import DecodedScan

log = logging.getLogger("posbridge.scanners.hid")

KEYBOARD_GAP = 0.1  # a keyboard-mode scan ends after this long without a report, even without Enter
ERROR_ROLL_OVER = 0x01
UNKNOWN_KEY = "\ufffd"  # a key the layout cannot type: keep the gap visible, never shorten an id silently
ENDING_CHARACTERS = "\r\n\t"  # typed by a control chord or an Alt code, they end a scan like Enter


class KeyboardDecoder:
    """Boot-protocol keyboard reports -> scans, with the scanner's layout (the module docstring has the rules)."""

    def __init__(self, layout: str, *, gap: float = KEYBOARD_GAP, max_length: int = 4096,
                 oem_code_page: int = 850) -> None:
        layouts.char_for(layout, 0x04)  # fail early on an unknown layout name
        if oem_code_page not in layouts.OEM_CODE_PAGES:
            raise ValueError(f"unknown OEM code page {oem_code_page}; known: {layouts.OEM_CODE_PAGES}")
        self.layout = layout
        self.gap = gap
        self.max_length = max_length
        self.oem_code_page = oem_code_page
        self._down: set[int] = set()
        self._chars: list[str] = []
        self._reports: list[bytes] = []
        self._alt_digits: str | None = None  # keypad digits typed while Alt is held
        self._last = 0.0

    @property
    def pending(self) -> bool:
        return bool(self._chars) or bool(self._alt_digits)

    def time_left(self, now: float) -> float | None:
        """Seconds until a pending scan ends by silence; None when nothing is pending."""
        return max(0.0, self._last + self.gap - now) if self.pending else None

    def reset(self) -> None:
        self._down.clear()
        self._chars.clear()
        self._reports.clear()
        self._alt_digits = None

    def feed(self, report: bytes, now: float = 0.0) -> list[DecodedScan]:
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
        if pressed or self.pending:
            self._reports.append(report[:8])
        if self._alt_digits is not None and not modifiers & layouts.ALT:
            done += self._type(layouts.alt_code_char(self._alt_digits, self.oem_code_page) or UNKNOWN_KEY)
            self._alt_digits = None
        for usage in pressed:
            if modifiers & layouts.ALT and usage in layouts.KEYPAD_DIGIT_OF:
                self._alt_digits = (self._alt_digits or "") + layouts.KEYPAD_DIGIT_OF[usage]
            elif layouts.is_terminator(usage):
                done += self._end()
            else:
                self._alt_digits = None  # Alt + another key is a shortcut, not an Alt code
                done += self._type(self._char(usage, modifiers))
        return done

    def _type(self, char: str) -> list[DecodedScan]:
        if char in ENDING_CHARACTERS:
            return self._end()
        self._chars.append(char)
        if len(self._chars) > self.max_length:
            log.warning("keyboard scanner typed more than %d characters without Enter; dropped them",
                        self.max_length)
            self._chars.clear()
            self._reports.clear()
        return []

    def _char(self, usage: int, modifiers: int) -> str:
        if modifiers & (layouts.LEFT_CTRL | layouts.RIGHT_CTRL):
            base = layouts.char_for(self.layout, usage, 0)
            if base and "@" <= base.upper() <= "_":
                return chr(ord(base.upper()) - 0x40)
            return UNKNOWN_KEY
        return layouts.char_for(self.layout, usage, modifiers) or UNKNOWN_KEY

    def expire(self, now: float) -> list[DecodedScan]:
        """The pending scan, if no report came for ``gap`` seconds."""
        if self.pending and now - self._last >= self.gap:
            if self._alt_digits:  # Alt never released: the character was never typed
                self._alt_digits = None
            return self._end()
        return []

    def flush(self) -> list[DecodedScan]:
        """End of input (a capture file): whatever is pending is a scan."""
        self._alt_digits = None
        return self._end()

    def _end(self) -> list[DecodedScan]:
        text = "".join(self._chars)
        raw = b"".join(self._reports)
        self._chars.clear()
        self._reports.clear()
        if is_blank(text) or not text.strip("".join(map(chr, range(0x20))) + " \x7f"):
            if text:
                log.debug("keyboard scanner: %d blank or control-only characters were no scan", len(text))
            return []
        return [DecodedScan(text=text, data=text.encode("utf-8"), raw=raw)]


__all__ = ["KEYBOARD_GAP", "KeyboardDecoder", "UNKNOWN_KEY"]
