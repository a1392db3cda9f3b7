"""Keyboard layouts as key positions: (HID usage, modifiers) -> character.

A keyboard-wedge scanner does not send characters: it sends key positions (HID usages) plus modifiers,
chosen with the layout the *scanner* is set to. The host turns them back into characters with the layout
the *till* is set to. When the two differ, ``https://shop/c/OW7K2M9Q`` typed by a US scanner appears on a
Spanish till as ``httpsÑ--shop-c-OW7K2M9Q``. This module models the layouts so that:

- the USB keyboard-mode driver can decode boot-protocol reports (:func:`char_for`, :data:`TERMINATORS`);
- the card parser can undo the damage (:func:`repair`), and tests can produce it (:func:`retype`).

Tables follow xkeyboard-config ``symbols/{us,es,fr,de,pt,br}`` (with ``latin``, ``latin(type4)`` and
``pc(pc105)`` where they include them), mapped to HID usages as Linux ``hid-input.c`` does; the layout
table in ``shared/reference/scanners.md`` is authoritative where it speaks. Levels modelled: base, Shift,
AltGr (AltGr+Shift is not). Dead keys count as typing their spacing character (``´ ¨ ^ ` ~``): a scanner
that sends one means that character. Caps Lock is not modelled (scanners send Shift explicitly).

Each layout has *primary* positions (one per character; :func:`keys_for` returns them, and a scanner is
assumed to use them) and decode-only *aliases* (a second position xkb also gives a character, e.g. ES ``[``
on AltGr+8 besides AltGr+`````; the keypad; HID 0x31 vs 0x32, which Linux maps to the same key).
"""

from __future__ import annotations

from functools import lru_cache

LAYOUTS: tuple[str, ...] = ("us", "es", "fr", "de", "pt", "br-abnt2")

LEFT_CTRL, LEFT_SHIFT, LEFT_ALT, LEFT_GUI = 0x01, 0x02, 0x04, 0x08
RIGHT_CTRL, RIGHT_SHIFT, RIGHT_ALT, RIGHT_GUI = 0x10, 0x20, 0x40, 0x80
SHIFT = LEFT_SHIFT | RIGHT_SHIFT  #: either Shift key (test with ``modifiers & SHIFT``)
ALTGR = RIGHT_ALT  #: AltGr is the right Alt key (xkb ``level3(ralt_switch)``)
_NO_TEXT = LEFT_CTRL | RIGHT_CTRL | LEFT_ALT | LEFT_GUI | RIGHT_GUI  # chords that type no character

#: Keys that end a scan in keyboard mode; :func:`char_for` returns None for them.
TERMINATORS: dict[int, str] = {0x28: "Enter", 0x58: "Keypad Enter", 0x2B: "Tab"}

# xkb key name -> HID usage (Linux hid-input.c hid_keyboard[]). BKSL is 0x31 or 0x32, see _BKSL_USAGE.
_USAGE: dict[str, int] = {
    "TLDE": 0x35, "AE11": 0x2D, "AE12": 0x2E, "AD11": 0x2F, "AD12": 0x30, "AC10": 0x33, "AC11": 0x34,
    "AB08": 0x36, "AB09": 0x37, "AB10": 0x38, "AB11": 0x87, "LSGT": 0x64, "SPCE": 0x2C,
    **{f"AE{n:02d}": 0x1E + n - 1 for n in range(1, 11)},
    **{f"AD{n:02d}": u for n, u in enumerate((0x14, 0x1A, 0x08, 0x15, 0x17, 0x1C, 0x18, 0x0C, 0x12, 0x13), 1)},
    **{f"AC{n:02d}": u for n, u in enumerate((0x04, 0x16, 0x07, 0x09, 0x0A, 0x0B, 0x0D, 0x0E, 0x0F), 1)},
    **{f"AB{n:02d}": u for n, u in enumerate((0x1D, 0x1B, 0x06, 0x19, 0x05, 0x11, 0x10), 1)},
}
_QWERTY = dict(zip([f"AD{n:02d}" for n in range(1, 11)] + [f"AC{n:02d}" for n in range(1, 10)]
                   + [f"AB{n:02d}" for n in range(1, 8)], "qwertyuiopasdfghjklzxcvbnm"))
# ISO layouts put BKSL next to Enter (0x32, "Non-US #"); ES and PT follow the project brief (0x31).
_BKSL_USAGE = {"us": 0x31, "es": 0x31, "pt": 0x31, "de": 0x32, "fr": 0x32, "br-abnt2": 0x32}

# Per key: one character per level (base, Shift, AltGr); " " marks a level that types nothing we model.
# Letters not listed are QWERTY letters (lower/upper case). Dead keys are marked in the comments.
_PRIMARY: dict[str, dict[str, str]] = {
    "us": {
        "TLDE": "`~", "AE01": "1!", "AE02": "2@", "AE03": "3#", "AE04": "4$", "AE05": "5%", "AE06": "6^",
        "AE07": "7&", "AE08": "8*", "AE09": "9(", "AE10": "0)", "AE11": "-_", "AE12": "=+",
        "AD11": "[{", "AD12": "]}", "AC10": ";:", "AC11": "'\"", "BKSL": "\\|",
        "AB08": ",<", "AB09": ".>", "AB10": "/?",
    },
    "es": {  # dead: AD11 ` ^, AC11 ´ ¨
        "TLDE": "ºª\\", "AE01": "1!|", "AE02": "2\"@", "AE03": "3·#", "AE04": "4$~", "AE05": "5%",
        "AE06": "6&", "AE07": "7/", "AE08": "8(", "AE09": "9)", "AE10": "0=", "AE11": "'?", "AE12": "¡¿",
        "AD03": "eE€", "AD11": "`^[", "AD12": "+*]", "AC10": "ñÑ", "AC11": "´¨{", "BKSL": "çÇ}",
        "AB08": ",;", "AB09": ".:", "AB10": "-_", "LSGT": "<>",
    },
    "fr": {  # AZERTY; dead: AD11 (^) ¨
        "TLDE": "²", "AE01": "&1", "AE02": "é2~", "AE03": "\"3#", "AE04": "'4{", "AE05": "(5[",
        "AE06": "-6|", "AE07": "è7`", "AE08": "_8\\", "AE09": "ç9^", "AE10": "à0@", "AE11": ")°]",
        "AE12": "=+}", "AD01": "aA", "AD02": "zZ", "AD03": "eE€", "AD11": " ¨", "AD12": "$£",
        "AC01": "qQ", "AC10": "mM", "AC11": "ù%", "BKSL": "*µ", "AB01": "wW", "AB07": ",?",
        "AB08": ";.", "AB09": ":/", "AB10": "!§", "LSGT": "<>",
    },
    "de": {  # QWERTZ; dead: TLDE ^, AE12 ´ `
        "TLDE": "^°", "AE01": "1!", "AE02": "2\"", "AE03": "3§", "AE04": "4$", "AE05": "5%", "AE06": "6&",
        "AE07": "7/{", "AE08": "8([", "AE09": "9)]", "AE10": "0=}", "AE11": "ß?\\", "AE12": "´`",
        "AD01": "qQ@", "AD03": "eE€", "AD06": "zZ", "AD11": "üÜ", "AD12": "+*~", "AC10": "öÖ",
        "AC11": "äÄ", "BKSL": "#'", "AB01": "yY", "AB08": ",;", "AB09": ".:", "AB10": "-_", "LSGT": "<>|",
    },
    "pt": {  # dead: AD12 ´ `, BKSL ~ ^
        "TLDE": "\\|", "AE01": "1!", "AE02": "2\"@", "AE03": "3#", "AE04": "4$", "AE05": "5%", "AE06": "6&",
        "AE07": "7/{", "AE08": "8([", "AE09": "9)]", "AE10": "0=}", "AE11": "'?", "AE12": "«»",
        "AD03": "eE€", "AD11": "+*", "AD12": "´`", "AC10": "çÇ", "AC11": "ºª", "BKSL": "~^",
        "AB08": ",;", "AB09": ".:", "AB10": "-_", "LSGT": "<>",
    },
    "br-abnt2": {  # dead: AE06 ¨, AD11 ´ `, AC11 ~ ^
        "TLDE": "'\"", "AE01": "1!", "AE02": "2@", "AE03": "3#", "AE04": "4$", "AE05": "5%", "AE06": "6¨",
        "AE07": "7&", "AE08": "8*", "AE09": "9(", "AE10": "0)", "AE11": "-_", "AE12": "=+",
        "AD11": "´`", "AD12": "[{", "BKSL": "]}", "AC10": "çÇ", "AC11": "~^", "LSGT": "\\|",
        "AB08": ",<", "AB09": ".>", "AB10": ";:", "AB11": "/?",
    },
}

#: Characters that sit on a *dead* key in each layout (xkeyboard-config; marked in the tables' comments above):
#: pressing that key alone types nothing until the next key, so whoever types one follows it with Space.
DEAD_CHARACTERS: dict[str, str] = {
    "us": "",
    "es": "`^´¨",
    "fr": "¨",
    "de": "^´`",
    "pt": "´`~^",
    "br-abnt2": "¨´`~^",
}

# Second positions xkb also gives these characters (decoded, never chosen by keys_for).
_ALIASES: dict[str, dict[str, str]] = {
    "us": {"LSGT": "<>"},
    "es": {"AE07": "  {", "AE08": "  [", "AE09": "  ]", "AE10": "  }", "AE11": "  \\", "AC10": "  ~",
           "AD01": "  @", "LSGT": "  |"},
    "fr": {"AD11": "^", "TLDE": " ~", "AC01": "  @"},
    "de": {},
    "pt": {"AE11": "  \\", "LSGT": "  \\", "AD01": "  @", "AD12": "  ~", "AC11": "  ^", "BKSL": "  `"},
    "br-abnt2": {"AE07": "  {", "AE08": "  [", "AE09": "  ]", "AE10": "  }", "AE11": "  \\",
                 "AD01": "  /", "AD02": "  ?", "AC11": "  ~"},
}

# Keypad with Num Lock on: the same in every layout (DE and BR-ABNT2 have a decimal comma).
_KEYPAD: dict[int, str] = {0x54: "/", 0x55: "*", 0x56: "-", 0x57: "+", 0x62: "0",
                           **{0x59 + n: str(n + 1) for n in range(9)}}
_KEYPAD_DECIMAL = {"de": ",", "br-abnt2": ","}

_LEVEL_MODIFIERS = (0, LEFT_SHIFT, ALTGR)


def _check_layout(layout: str) -> None:
    if layout not in _PRIMARY:
        raise ValueError(f"unknown keyboard layout {layout!r}; known: {', '.join(LAYOUTS)}")


def _levels(layout: str, keys: dict[str, str]) -> dict[tuple[int, int], str]:
    """(usage, level) -> character for one table; BKSL goes to the layout's own usage (0x31 or 0x32)."""
    out: dict[tuple[int, int], str] = {}
    for name, per_level in keys.items():
        usage = _BKSL_USAGE[layout] if name == "BKSL" else _USAGE[name]
        for level, char in enumerate(per_level):
            if char != " ":
                out[(usage, level)] = char
    return out


@lru_cache(maxsize=None)
def _tables(layout: str) -> tuple[dict[tuple[int, int], str], dict[str, tuple[int, int]]]:
    """(decode table: (usage, level) -> char, primary positions: char -> (usage, modifiers))."""
    _check_layout(layout)
    keys = {name: letter + letter.upper() for name, letter in _QWERTY.items()}
    keys.update(_PRIMARY[layout])
    primary = _levels(layout, keys)
    positions: dict[str, tuple[int, int]] = {" ": (0x2C, 0)}  # a space in the tables means "nothing"
    for (usage, level), char in primary.items():
        if char in positions:
            raise AssertionError(f"layout {layout}: {char!r} has two primary positions")
        positions[char] = (usage, _LEVEL_MODIFIERS[level])
    primary[(0x2C, 0)] = primary[(0x2C, 1)] = " "
    decode = dict(primary)
    for key, char in _levels(layout, _ALIASES[layout]).items():
        decode.setdefault(key, char)
    other_bksl = 0x31 + 0x32 - _BKSL_USAGE[layout]
    for level in range(3):
        if (_BKSL_USAGE[layout], level) in decode:
            decode.setdefault((other_bksl, level), decode[(_BKSL_USAGE[layout], level)])
    return decode, positions


def char_for(layout: str, usage: int, modifiers: int = 0) -> str | None:
    """The character a host set to ``layout`` types for this key and modifier byte, or None.

    None for keys that type no character (terminators, function keys, unknown usages), for Ctrl, left Alt
    and GUI chords, and for AltGr+Shift. Keypad digits and operators type the same in every layout.
    Raises ValueError for an unknown layout name (a programming or configuration error).
    """
    decode, _ = _tables(layout)
    if modifiers & _NO_TEXT:
        return None
    level = (2 if modifiers & ALTGR else 0) + (1 if modifiers & SHIFT else 0)
    if usage in _KEYPAD or usage == 0x63:
        if level != 0:
            return None
        return _KEYPAD.get(usage) or _KEYPAD_DECIMAL.get(layout, ".")
    if level > 2:
        return None
    return decode.get((usage, level))


def keys_for(layout: str, char: str) -> tuple[int, int] | None:
    """(usage, modifiers) a scanner set to ``layout`` sends to type ``char``; None if it cannot.

    Modifiers are 0, :data:`LEFT_SHIFT` (0x02) or :data:`ALTGR` (0x40). ``char_for(layout, *keys_for(
    layout, c)) == c`` holds for every character of :func:`chars`.
    """
    _, positions = _tables(layout)
    return positions.get(char)


def chars(layout: str) -> frozenset[str]:
    """Every character ``layout`` can type from a primary position (letters, digits, space, punctuation...)."""
    return frozenset(_tables(layout)[1])


def retype(text: str, typed_with: str, read_as: str) -> tuple[str, list[int]]:
    """What a host set to ``read_as`` shows when a scanner set to ``typed_with`` types ``text``.

    Returns the text shown and the positions (indexes into ``text``) of characters that did not come
    through: the scanner's layout cannot type them, or the host's layout types nothing for that key. This
    is the damage :func:`repair` undoes; tests and device simulators use it to produce realistic input.
    """
    _check_layout(read_as)
    shown: list[str] = []
    lost: list[int] = []
    for index, char in enumerate(text):
        keys = keys_for(typed_with, char)
        seen = char_for(read_as, *keys) if keys else None
        if seen is None:
            lost.append(index)
        else:
            shown.append(seen)
    return "".join(shown), lost


@lru_cache(maxsize=None)
def _inverse(scanner_layout: str, host_layout: str) -> dict[str, str | None]:
    """Character the host shows -> character the scanner meant (None when two scanner characters collide).

    A host character reached through one of the host's primary positions wins over one reached through a
    decode-only alias: a PT scanner's ``:`` (Shift+0x37) and ``>`` (Shift+0x64) both show ``>`` on a US
    till, and ``:`` is the one card URLs are made of.
    """
    host_positions = set(_tables(host_layout)[1].values())
    best: dict[str, tuple[int, str | None]] = {}
    for char in chars(scanner_layout):
        usage, modifiers = _tables(scanner_layout)[1][char]
        seen = char_for(host_layout, usage, modifiers)
        if seen is None:
            continue
        rank = 0 if (usage, modifiers) in host_positions else 1
        held = best.get(seen)
        if held is None or rank < held[0]:
            best[seen] = (rank, char)
        elif rank == held[0] and held[1] != char:
            best[seen] = (rank, None)
    return {seen: char for seen, (_, char) in best.items()}


def repair(seen: str, scanner_layout: str, host_layout: str) -> str | None:
    """The text a scanner set to ``scanner_layout`` meant, given what a host set to ``host_layout`` showed.

    ``repair("httpsÑ--shop.example-c-OW7K2M9Q", "us", "es") == "https://shop.example/c/OW7K2M9Q"``.
    Returns None when any character cannot be mapped back unambiguously (the host cannot have shown it for
    a key this scanner sends, or two of the scanner's keys show the same character on this host). With
    equal layouts the text is returned unchanged. Raises ValueError for an unknown layout name.
    """
    _check_layout(scanner_layout)
    _check_layout(host_layout)
    if scanner_layout == host_layout:
        return seen
    inverse = _inverse(scanner_layout, host_layout)
    meant: list[str] = []
    for char in seen:
        original = inverse.get(char)
        if original is None:
            return None
        meant.append(original)
    return "".join(meant)


def is_terminator(usage: int) -> bool:
    """True for Enter, keypad Enter and Tab: the keys a keyboard-mode scanner ends a scan with."""
    return usage in TERMINATORS


# Alt codes ("ALT mode" of scanners, and what an output can type on any layout) -------------------------------
#
# Windows turns Alt held + decimal digits on the keypad into one character when Alt is released: ``Alt+0nnn``
# (a leading zero) is byte nnn of Windows-1252, ``Alt+nnn`` byte nnn (mod 256) of the OEM code page, 437 in the
# US and 850 in Western Europe. Keypad keys type the same in every layout, which is why scanners offer it.

#: Keypad digit -> HID usage (Keypad 1-9 are 0x59-0x61, Keypad 0 is 0x62).
KEYPAD_DIGITS: dict[str, int] = {**{str(n + 1): 0x59 + n for n in range(9)}, "0": 0x62}
KEYPAD_DIGIT_OF: dict[int, str] = {usage: digit for digit, usage in KEYPAD_DIGITS.items()}
OEM_CODE_PAGES: tuple[int, ...] = (437, 850)
ALT = LEFT_ALT | RIGHT_ALT  #: either Alt key (test with ``modifiers & ALT``)


def alt_code_char(digits: str, oem_code_page: int = 850) -> str | None:
    """The character ``Alt`` + keypad ``digits`` types: Windows-1252 with a leading 0, else the OEM code page.

    None for no digits or an unknown code page. Values past 255 wrap as Windows does (mod 256). Bytes
    Windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) give the C1 control of that value, as Windows does.
    """
    if not digits or not digits.isdigit() or oem_code_page not in OEM_CODE_PAGES:
        return None
    value = int(digits) % 256
    if digits.startswith("0"):
        try:
            return bytes([value]).decode("cp1252")
        except UnicodeDecodeError:
            return chr(value)
    return bytes([value]).decode(f"cp{oem_code_page}")


def alt_code_digits(char: str, oem_code_page: int = 850) -> str | None:
    """Keypad digits that type ``char`` with Alt held: ``"0209"`` (Windows-1252) where it has the character,
    else the OEM code page's number without a leading zero; None when neither has it.

    ``alt_code_char(alt_code_digits(c, page), page) == c`` for every character either page holds.
    """
    if len(char) != 1 or oem_code_page not in OEM_CODE_PAGES:
        return None
    try:
        value = char.encode("cp1252")[0]
    except UnicodeEncodeError:
        value = None
    if value is not None and alt_code_char(f"0{value:03d}") == char:
        return f"0{value:03d}"
    try:
        return str(char.encode(f"cp{oem_code_page}")[0])
    except UnicodeEncodeError:
        return None
