"""The till's side of a keystroke output, for round-trip tests: what a host reads from our keyboard.

Reports are decoded with the project's own keyboard-report decoder (the one that reads keyboard-mode scanners),
in the till's layout; a *host* then composes dead keys as every desktop does: a dead key followed by Space types
the key's own character. Linux input events (uinput) are turned back into boot-protocol reports with the
kernel's ``hid_keyboard[]`` table from ``drivers/hid/hid-input.c``, an independent source from the names the
output uses.
"""

from __future__ import annotations

from posbridge.scanners.keyboard import KeyboardDecoder

#: Characters on dead keys of each layout (xkeyboard-config symbols/{es,fr,de,pt,br}).
HOST_DEAD_KEYS = {"us": "", "es": "`^´¨", "fr": "¨", "de": "^´`", "pt": "´`~^", "br-abnt2": "¨´`~^"}

#: Linux drivers/hid/hid-input.c hid_keyboard[] for usages 0x00-0x87 (0 = no key).
HID_KEYBOARD = [
    0, 0, 0, 0, 30, 48, 46, 32, 18, 33, 34, 35, 23, 36, 37, 38,
    50, 49, 24, 25, 16, 19, 31, 20, 22, 47, 17, 45, 21, 44, 2, 3,
    4, 5, 6, 7, 8, 9, 10, 11, 28, 1, 14, 15, 57, 12, 13, 26,
    27, 43, 43, 39, 40, 41, 51, 52, 53, 58, 59, 60, 61, 62, 63, 64,
    65, 66, 67, 68, 87, 88, 99, 70, 119, 110, 102, 104, 111, 107, 109, 106,
    105, 108, 103, 69, 98, 55, 74, 78, 96, 79, 80, 81, 75, 76, 77, 71,
    72, 73, 82, 83, 86, 127, 116, 117, 183, 184, 185, 186, 187, 188, 189, 190,
    191, 192, 193, 194, 134, 138, 130, 132, 128, 129, 131, 137, 133, 135, 136, 113,
    115, 114, 0, 0, 0, 121, 0, 89,
]
#: Linux key codes of the modifiers (input-event-codes.h) -> boot report modifier bit.
MODIFIER_BITS = {29: 0x01, 42: 0x02, 56: 0x04, 125: 0x08, 97: 0x10, 54: 0x20, 100: 0x40, 126: 0x80}
USAGE_OF_CODE = {code: usage for usage, code in enumerate(HID_KEYBOARD) if code and usage not in (0x32,)}


def compose_dead_keys(text: str, layout: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char in HOST_DEAD_KEYS[layout]:
            assert index + 1 < len(text) and text[index + 1] == " ", (
                f"dead key {char!r} not followed by Space in {text!r}: the till would put an accent on the next key")
            index += 1
        out.append(char)
        index += 1
    return "".join(out)


def read_reports(data: bytes, layout: str) -> list[str]:
    """Texts the till receives (each ended by Enter or Tab) from a stream of 8-byte boot reports."""
    assert len(data) % 8 == 0, f"{len(data)} bytes is not a whole number of 8-byte reports"
    decoder = KeyboardDecoder(layout, gap=3600)
    texts: list[str] = []
    for offset in range(0, len(data), 8):
        texts += [compose_dead_keys(scan.text, layout) for scan in decoder.feed(data[offset:offset + 8], 0.0)]
    texts += [compose_dead_keys(scan.text, layout) for scan in decoder.flush()]
    return texts


def reports_from_events(events: list[tuple[int, int, int]]) -> bytes:
    """Linux input events ``(type, code, value)`` -> the boot report a USB keyboard would have sent at each
    SYN_REPORT (EV_KEY = 1, EV_SYN = 0)."""
    held: list[int] = []
    modifiers = 0
    out = bytearray()
    for kind, code, value in events:
        if kind == 0:
            out += bytes([modifiers, 0, *held[:6], *[0] * (6 - len(held[:6]))])
        elif kind == 1:
            if code in MODIFIER_BITS:
                modifiers = modifiers | MODIFIER_BITS[code] if value else modifiers & ~MODIFIER_BITS[code]
                continue
            usage = USAGE_OF_CODE[code]
            if value == 1 and usage not in held:
                held.append(usage)
            elif value == 0 and usage in held:
                held.remove(usage)
    return bytes(out)
