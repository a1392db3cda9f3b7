"""``type = "uinput"``: posbridge on a Linux till types through a virtual keyboard (``/dev/uinput``, python-evdev).

The kernel treats it like a plugged-in keyboard, so the POS window with focus receives the keys under X11,
Wayland and the console alike, in the till's own keyboard layout. Key positions come from the same plan as the
USB gadget (:mod:`posbridge.outputs.keystrokes`); this module only turns HID usages into Linux key codes (by
their names in ``linux/input-event-codes.h``, mapped as the kernel's ``hid-input.c`` maps a USB keyboard).
"""

from __future__ import annotations

import errno
import os
import time
from functools import lru_cache
from typing import Any

from posbridge.errors import OutputError
from posbridge.outputs.keystrokes import Key
from posbridge.outputs.output import KeyboardOutput

DEVICE_NAME = "posbridge keyboard"

#: HID keyboard usage -> Linux key name, for every usage the layout tables can choose (and Enter, Tab, Space).
USAGE_KEY_NAMES: dict[int, str] = {
    **{0x04 + n: f"KEY_{chr(ord('A') + n)}" for n in range(26)},
    **{0x1E + n: f"KEY_{(n + 1) % 10}" for n in range(10)},
    0x28: "KEY_ENTER", 0x2B: "KEY_TAB", 0x2C: "KEY_SPACE", 0x2D: "KEY_MINUS", 0x2E: "KEY_EQUAL",
    0x2F: "KEY_LEFTBRACE", 0x30: "KEY_RIGHTBRACE", 0x31: "KEY_BACKSLASH", 0x32: "KEY_BACKSLASH",
    0x33: "KEY_SEMICOLON", 0x34: "KEY_APOSTROPHE", 0x35: "KEY_GRAVE", 0x36: "KEY_COMMA", 0x37: "KEY_DOT",
    0x38: "KEY_SLASH", 0x64: "KEY_102ND", 0x87: "KEY_RO",
}
#: Modifier bit of the boot report -> Linux key name.
MODIFIER_KEY_NAMES: dict[int, str] = {
    0x01: "KEY_LEFTCTRL", 0x02: "KEY_LEFTSHIFT", 0x04: "KEY_LEFTALT", 0x08: "KEY_LEFTMETA",
    0x10: "KEY_RIGHTCTRL", 0x20: "KEY_RIGHTSHIFT", 0x40: "KEY_RIGHTALT", 0x80: "KEY_RIGHTMETA",
}

Frame = list[tuple[int, int]]  # (key code, 1 = down / 0 = up), followed by one SYN_REPORT


def _ecodes() -> Any:
    try:
        from evdev import ecodes
    except ImportError:
        raise OutputError("python-evdev is not installed; it is needed for type = \"uinput\" (x86_64: pip install "
                          "evdev-binary; other machines: pip install 'posbridge[uinput]' or apt-get install "
                          "python3-evdev)") from None
    return ecodes


@lru_cache(maxsize=None)
def key_codes() -> tuple[dict[int, int], dict[int, int]]:
    """(usage -> Linux key code, modifier bit -> Linux key code)."""
    names = _ecodes().ecodes
    return ({usage: names[name] for usage, name in USAGE_KEY_NAMES.items()},
            {bit: names[name] for bit, name in MODIFIER_KEY_NAMES.items()})


def frames_for(keys: list[Key]) -> list[Frame]:
    """The event frames that type ``keys``: per key, modifiers and key down (one frame), then key and
    modifiers up (the next frame)."""
    usages, modifiers = key_codes()
    frames: list[Frame] = []
    for key in keys:
        held = [modifiers[bit] for bit in sorted(modifiers) if key.modifiers & bit]
        code = usages[key.usage]
        frames.append([(c, 1) for c in held] + [(code, 1)])
        frames.append([(code, 0)] + [(c, 0) for c in reversed(held)])
    return frames


class UinputOutput(KeyboardOutput):
    """A virtual keyboard created at start and kept while the daemon runs."""

    kind = "uinput"

    def __init__(self, settings) -> None:  # type: ignore[no-untyped-def]
        super().__init__(settings)
        self._device: Any = None

    def open_device(self) -> None:
        ecodes = _ecodes()
        path = self.settings.device
        if not os.path.exists(path):
            raise OutputError(f"{path} does not exist: load the uinput module (sudo modprobe uinput; to load it at "
                              "boot: echo uinput | sudo tee /etc/modules-load.d/uinput.conf)")
        if not os.access(path, os.R_OK | os.W_OK):
            raise OutputError(f"permission denied on {path} for uid {os.getuid()}: install drivers/"
                              "99-posbridge-uinput.rules and add the service user to the input group "
                              "(sudo usermod -aG input posbridge)")
        import evdev

        usages, modifiers = key_codes()
        try:
            self._device = evdev.UInput({ecodes.EV_KEY: sorted({*usages.values(), *modifiers.values()})},
                                        name=DEVICE_NAME, devnode=path)
        except (OSError, evdev.UInputError) as exc:
            code = getattr(exc, "errno", None)
            if code == errno.EACCES:
                raise OutputError(f"permission denied creating a keyboard through {path}") from None
            raise OutputError(f"cannot create a virtual keyboard through {path}: {exc}") from None

    def close_device(self) -> None:
        if self._device is not None:
            device, self._device = self._device, None
            device.close()

    def press(self, keys: list[Key]) -> None:
        device = self._device
        if device is None:
            raise OutputError(f"{self.settings.device} is not open")
        ecodes = _ecodes()
        delay = self.settings.key_delay
        frames = frames_for(keys)
        try:
            for index, frame in enumerate(frames):
                for code, value in frame:
                    device.write(ecodes.EV_KEY, code, value)
                device.syn()
                if delay and index % 2 == 1 and index < len(frames) - 1:
                    time.sleep(delay)
        except OSError as exc:
            raise OutputError(f"writing to the virtual keyboard failed: {exc.strerror or exc}") from None
