"""Text -> the keys a keyboard set to the till's layout presses to type it. Pure: no device I/O.

Both outputs (uinput and the USB keyboard gadget) type from the same plan, and the plan comes from the key
position tables that decode keyboard-mode scanners (:mod:`posbridge.layouts`), so a text typed here in a
layout reads back as the same text through :class:`posbridge.scanners.keyboard.KeyboardDecoder` in that
layout. What callers may rely on:

- :func:`plan` checks *every* character before returning: a character the layout cannot type raises
  :class:`~posbridge.errors.UntypableText` naming all of them, so nothing is ever half typed;
- a character that sits on a dead key of the layout (``~`` on a Portuguese till, for example) is followed by
  Space, which makes every desktop (Windows, X11, Wayland, the console) type the character itself instead of
  waiting to put an accent on the next letter;
- :func:`boot_reports` gives one press and one release report per key (8-byte boot-protocol reports), so two
  equal characters in a row are two key presses for the host.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from posbridge import layouts
from posbridge.errors import UntypableText

#: Usages of the keys ``prefix``/``suffix`` may name (the output's config keys).
NAMED_KEYS: dict[str, int] = {"enter": 0x28, "tab": 0x2B}
SPACE = 0x2C

@dataclass(frozen=True)
class Key:
    """One key press: HID usage and modifier byte (0, Left Shift 0x02 or AltGr 0x40)."""

    usage: int
    modifiers: int = 0


def plan(text: str, layout: str, prefix: str = "none", suffix: str = "enter") -> list[Key]:
    """The keys that type ``prefix`` + ``text`` + ``suffix`` on a till set to ``layout``.

    Raises :class:`UntypableText` (listing each character once, in order) when any character cannot be typed,
    and ValueError for an unknown layout or key name (configuration errors, validated earlier).
    """
    missing: list[str] = []
    keys: list[Key] = []
    keys.extend(_named(prefix))
    dead = layouts.DEAD_CHARACTERS[layout] if layout in layouts.DEAD_CHARACTERS else _unknown_layout(layout)
    for char in text:
        position = layouts.keys_for(layout, char)
        if position is None:
            if char not in missing:
                missing.append(char)
            continue
        keys.append(Key(*position))
        if char in dead:
            keys.append(Key(SPACE))
    if missing:
        raise UntypableText(layout, missing)
    keys.extend(_named(suffix))
    return keys


def _unknown_layout(layout: str) -> str:
    raise ValueError(f"unknown keyboard layout {layout!r}; known: {', '.join(layouts.LAYOUTS)}")


def _named(name: str) -> list[Key]:
    if name == "none":
        return []
    if name not in NAMED_KEYS:
        raise ValueError(f"unknown key {name!r}; use enter, tab or none")
    return [Key(NAMED_KEYS[name])]


RELEASE = bytes(8)


def press_report(key: Key) -> bytes:
    """The boot-protocol report that holds ``key`` (and its modifiers) down."""
    return bytes((key.modifiers, 0, key.usage, 0, 0, 0, 0, 0))


def boot_reports(keys: Iterable[Key]) -> Iterator[bytes]:
    """Press, release, press, release...: 8-byte reports as a USB keyboard (or a scanner) sends them."""
    for key in keys:
        yield press_report(key)
        yield RELEASE
