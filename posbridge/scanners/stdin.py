"""``type = "stdin"``: one line typed in the terminal (or piped in) is one scan.

For demos, ``make run`` and scripted tests: ``printf 'OW7K2M9Q\\n' | posbridge scanners watch``. At end of input
the source raises :class:`~posbridge.scanners.SourceExhausted`, so the supervisor writes one line and
stops instead of reopening a stream that cannot come back (under systemd stdin is /dev/null: one line, no storm).

Reads wait with ``select`` for at most a second and never block in ``readline``: a worker thread stuck in a read
would keep the process from exiting.
"""

from __future__ import annotations

import os
import select
import sys
from typing import BinaryIO

from posbridge.config import StdinScanner
from posbridge.scanners import ScanEvent, ScannerGone, ScannerUnavailable, SourceExhausted, decode_text, is_blank

READ_WAIT = 1.0
MAX_LINE = 64 * 1024


class StdinSource:
    """A :class:`~posbridge.scanners.ScanSource` over a file descriptor (standard input unless ``stream``)."""

    def __init__(self, config: StdinScanner, stream: BinaryIO | None = None) -> None:
        self.name = config.name
        self._stream = stream
        self._fd: int | None = None
        self._pending = bytearray()
        self._ended = False

    def open(self) -> None:
        if self._ended:
            raise SourceExhausted("standard input has ended")
        stream = self._stream if self._stream is not None else sys.stdin.buffer
        try:
            self._fd = stream.fileno()
        except (AttributeError, ValueError, OSError) as exc:
            raise ScannerUnavailable(f"standard input cannot be read ({exc}); run posbridge in a terminal or pipe "
                                     "lines into it") from exc

    def read(self) -> list[ScanEvent]:
        if self._ended:
            raise SourceExhausted("standard input has ended")
        if self._fd is None:
            raise ScannerGone("standard input is not open")
        ready, _, _ = select.select([self._fd], [], [], READ_WAIT)
        if not ready:
            return []
        chunk = os.read(self._fd, 65536)
        if not chunk:
            self._ended = True
            tail = bytes(self._pending)
            self._pending.clear()
            if not is_blank(decode_text(tail)):
                return [self._event(tail)]  # the last line had no newline; the next read reports the end
            raise SourceExhausted("standard input has ended")
        self._pending += chunk
        *lines, rest = bytes(self._pending).split(b"\n")
        self._pending = bytearray(rest if len(rest) <= MAX_LINE else b"")
        events = [self._event(line) for line in lines]
        return [e for e in events if not is_blank(e.text)]  # Enter alone is no scan

    def _event(self, line: bytes) -> ScanEvent:
        line = line.rstrip(b"\r")
        return ScanEvent(text=decode_text(line), raw=line, symbology=None, source=self.name)

    def close(self) -> None:
        # standard input belongs to the process, not to this source: leave it open, forget it
        self._fd = None
        self._pending.clear()
