"""A simulated serial scanner: a pseudo-terminal pair.

pyserial opens the slave side (``path``) exactly as it opens ``/dev/ttyACM0``; the test plays the scanner by
writing bytes on the master side. Closing the master is what an unplugged USB-CDC scanner looks like to the
reader: reads on the slave fail with EIO.
"""

from __future__ import annotations

import os
import termios
import tty
from types import TracebackType


class PtyScanner:
    """One pseudo-terminal pair standing in for one serial scanner."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        # raw mode on the slave: no echo, no CR/LF translation, bytes pass untouched (like a real serial port)
        tty.setraw(self._slave, termios.TCSANOW)
        self.path = os.ttyname(self._slave)

    def write(self, data: bytes) -> None:
        """Send bytes as the scanner would (all of them, even when the pty buffer is briefly full)."""
        view = memoryview(data)
        while view:
            written = os.write(self.master, view)
            view = view[written:]

    def scan(self, text: str, suffix: bytes = b"\r\n", encoding: str = "utf-8") -> None:
        """One read of one code, framed the way a scanner in "data + suffix" mode frames it."""
        self.write(text.encode(encoding) + suffix)

    def unplug(self) -> None:
        """Close both ends: the reader's next read fails and the path stops existing."""
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = self._slave = -1

    close = unplug

    def __enter__(self) -> "PtyScanner":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.unplug()
