"""``type = "hid-gadget"``: this Linux box is a USB keyboard for the till (Raspberry Pi 4/5, Zero 2 W, any board
with a USB device controller), so a Windows till running Ágora receives keystrokes with nothing installed on it.

The kernel's HID function (``/dev/hidg0``, created by ``posbridge gadget setup``) takes 8-byte boot-protocol
keyboard reports; each write is one report the till reads at its next USB poll. The device is opened
non-blocking and each write waits at most ``write_timeout`` for the till to take the previous report: a till
that is off, asleep or unplugged makes the scan fail with a clear reason instead of freezing the output.
"""

from __future__ import annotations

import errno
import os
import select
import time

from posbridge.errors import OutputError
from posbridge.outputs.keystrokes import RELEASE, Key, press_report
from posbridge.outputs.output import KeyboardOutput

SETUP_HINT = "set the gadget up with `sudo posbridge gadget setup` (drivers/README.md: dtoverlay=dwc2)"


class HidGadgetOutput(KeyboardOutput):
    """Writes boot-keyboard reports to the gadget's HID device (or, in tests, to a FIFO)."""

    kind = "hid-gadget"

    def __init__(self, settings) -> None:  # type: ignore[no-untyped-def]
        super().__init__(settings)
        self._fd: int | None = None

    def open_device(self) -> None:
        path = self.settings.device
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise OutputError(f"{path} does not exist: the USB keyboard gadget is not set up; {SETUP_HINT}") from None
        except PermissionError:
            raise OutputError(f"permission denied on {path} for uid {os.getuid()}: install drivers/99-posbridge-uinput."
                              "rules (it covers /dev/hidg*) and add the service user to the input group") from None
        except OSError as exc:
            raise OutputError(f"cannot open {path}: {exc.strerror or exc}") from None

    def close_device(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _write(self, report: bytes) -> None:
        fd = self._fd
        if fd is None:
            raise OutputError(f"{self.settings.device} is not open")
        deadline = time.monotonic() + self.settings.write_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OutputError(f"the till did not read the keyboard within {self.settings.write_timeout:g} s "
                                  "(USB cable unplugged, the till off or asleep, or the gadget not bound to a UDC)")
            _, ready, _ = select.select([], [fd], [], left)
            if not ready:
                continue
            try:
                written = os.write(fd, report)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in (errno.ESHUTDOWN, errno.ENODEV, errno.EPIPE, errno.EIO):
                    raise OutputError(f"{self.settings.device}: {exc.strerror} (the till is not connected to the "
                                      "USB port, or the gadget was removed)") from None
                raise OutputError(f"writing {self.settings.device} failed: {exc.strerror or exc}") from None
            if written != len(report):
                raise OutputError(f"{self.settings.device} took {written} of {len(report)} bytes of a key report")
            return

    def press(self, keys: list[Key]) -> None:
        delay = self.settings.key_delay
        for index, key in enumerate(keys):
            self._write(press_report(key))
            self._write(RELEASE)
            if delay and index < len(keys) - 1:
                time.sleep(delay)
