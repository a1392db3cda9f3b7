"""Where a camera's frames come from: a live device read by a grabber thread, or a video file read in order.

- :class:`FrameGrabber` reads a live camera as fast as it delivers and keeps only the newest frame, so the
  caller never decodes a stale buffered frame (V4L2 buffers 4 by default). It owns the capture and releases it
  when it stops, and records why it failed (reads failing in a row, an OpenCV error).
- :class:`FileFrames` reads a video file or image sequence (``frames/%03d.png``) in order, paced to ``max_fps``
  unless pacing is off (tests, benchmarks), steps over unreadable frames, replays with ``loop``, and raises
  :class:`~posbridge.scanners.SourceExhausted` at the end of a non-looping file.
- :func:`classify_source` says which of device, stream, file or image sequence a configured ``source`` is.
- :func:`shorten_v4l2_wait` shortens OpenCV's V4L2 wait for a frame (10 s by default) so a vanished camera is
  noticed quickly. It is called just before a live camera is opened, never at import: importing this module
  changes nothing in the process.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

import cv2

from posbridge.scanners import ScannerGone, SourceExhausted

log = logging.getLogger("posbridge.scanners.camera")

V4L2_WAIT_VARIABLE = "OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT"
V4L2_WAIT = "2"  # seconds a V4L2 read waits for a frame (OpenCV's default: 10)

MAX_READ_FAILURES = 10  # failed reads in a row from a live camera -> the grabber gives up
MAX_BAD_FRAMES = 25  # unreadable frames in a row skipped in a file before it counts as ended
_SEQUENCE_PATTERN = re.compile(r"%0?\d*d")


def shorten_v4l2_wait() -> None:
    """Make OpenCV's V4L2 reads give up after :data:`V4L2_WAIT` s instead of 10, unless the operator set it.

    OpenCV has no per-capture read timeout for V4L2 (``CAP_PROP_READ_TIMEOUT_MSEC`` is not implemented there);
    it reads this environment variable once, at the first V4L2 read of the process. So the camera source calls
    this just before it opens a live camera, and a process that never opens one is left untouched.
    """
    os.environ.setdefault(V4L2_WAIT_VARIABLE, V4L2_WAIT)


def _join_timeout() -> float:
    """How long a grabber stuck in a V4L2 read may take to return: the V4L2 wait plus a second."""
    try:
        return float(os.environ.get(V4L2_WAIT_VARIABLE, "10")) + 1.0
    except ValueError:
        return 11.0  # unreadable: OpenCV falls back to its default of 10 s


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` the camera source uses (so a stand-in camera can replace it)."""

    def isOpened(self) -> bool: ...  # noqa: N802, E704
    def read(self) -> tuple[bool, Any]: ...  # noqa: E301, E704
    def set(self, prop: int, value: float) -> bool: ...  # noqa: E301, E704
    def get(self, prop: int) -> float: ...  # noqa: E301, E704
    def release(self) -> None: ...  # noqa: E301, E704


@dataclass
class CameraStats:
    """Counters since the source was built (they survive reopening), for ``/metrics`` and the benchmark.

    ``frames_read``: frames the device or file delivered (a live camera delivers more than are looked at; the
    newest wins). ``frames_decoded`` + ``frames_skipped`` (unchanged) = frames looked at. ``frames_bad``:
    unreadable frames skipped in a file. ``last_frame_at``: ``time.monotonic()`` of the newest frame (frame age).
    """

    frames_read: int = 0
    frames_decoded: int = 0
    frames_skipped: int = 0
    frames_bad: int = 0
    decode_seconds: float = 0.0
    decode_errors: int = 0
    scans: int = 0
    last_frame_at: float | None = None


def classify_source(source: str | int) -> tuple[str, str | int]:
    """``("device", index-or-path)``, ``("stream", url)``, ``("images", pattern)`` or ``("file", path)``."""
    if isinstance(source, int):
        return "device", source
    text = source.strip()
    if text.isdigit():
        return "device", int(text)
    if text.startswith("/dev/"):
        return "device", text
    if "://" in text:
        return "stream", text
    text = os.path.expanduser(text)
    return ("images" if _SEQUENCE_PATTERN.search(text) else "file"), text


def sequence_exists(pattern: str) -> bool:
    """Whether at least one file matches an image-sequence pattern such as ``frames/%03d.png``."""
    directory, name = os.path.split(pattern)
    match = _SEQUENCE_PATTERN.search(name)
    if match is None:
        return False
    regex = re.compile(re.escape(name[: match.start()]) + r"\d+" + re.escape(name[match.end():]) + r"\Z")
    try:
        return any(regex.match(entry) for entry in os.listdir(directory or "."))
    except OSError:
        return False


class FileFrames:
    """A video file or image sequence read in order; each frame is timed by the file's own clock."""

    def __init__(self, open_capture: Callable[[], Capture], *, loop: bool, max_fps: float, pace: bool,
                 stats: CameraStats, describe: str) -> None:
        self._open_capture = open_capture
        self._loop = loop
        self._interval = 1.0 / max_fps if pace else 0.0
        self._stats = stats
        self._describe = describe
        self._cap: Capture | None = open_capture()
        fps = self._cap.get(cv2.CAP_PROP_FPS)  # CAP_IMAGES reports none: use max_fps
        self._frame_time = 1.0 / fps if 0 < fps < 1000 else 1.0 / max_fps
        self._position = 0  # frames (good or bad) since the first pass started: the file's clock
        self._pass_frames = 0  # good frames in the current pass
        self._next_due = time.monotonic()

    @property
    def finished(self) -> bool:
        return self._cap is None

    def next(self) -> tuple[np.ndarray, float]:
        """The next frame and its time in the file; :class:`SourceExhausted` once a non-looping file ended."""
        bad_in_row = 0
        while self._cap is not None:
            ok, frame = self._cap.read()
            if ok and frame is not None and frame.size:
                self._position += 1
                self._pass_frames += 1
                self._stats.frames_read += 1
                self._stats.last_frame_at = time.monotonic()
                self._pace()
                return frame, self._position * self._frame_time
            position = self._cap.get(cv2.CAP_PROP_POS_FRAMES)
            if bad_in_row < MAX_BAD_FRAMES and 0 <= position < self._cap.get(cv2.CAP_PROP_FRAME_COUNT) - 1:
                bad_in_row += 1  # an unreadable frame inside the file (CAP_IMAGES stops at one): step over it
                self._position += 1
                self._stats.frames_bad += 1
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, position + 1)
                continue
            self._cap.release()
            self._cap = None
            if self._loop:
                if self._pass_frames == 0:
                    raise ScannerGone(f"{self._describe} has no readable frame")
                self._pass_frames = 0
                self._cap = self._open_capture()
        raise SourceExhausted(f"{self._describe} has ended (set loop = true to replay it)")

    def _pace(self) -> None:
        if self._interval:
            now = time.monotonic()
            if self._next_due > now:
                time.sleep(self._next_due - now)
            self._next_due = max(self._next_due, now - 1.0) + self._interval  # catch up at most 1 s of lag

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FrameGrabber(threading.Thread):
    """Reads a live camera as fast as it delivers and keeps only the newest frame.

    The thread owns the capture and releases it when it stops, so ``close()`` never releases a capture that a
    blocked ``read()`` is still inside.
    """

    def __init__(self, cap: Capture, stats: CameraStats, name: str) -> None:
        super().__init__(name=f"camera-grabber-{name}", daemon=True)
        self._cap = cap
        self._stats = stats
        self._stop_event = threading.Event()
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._seq = 0
        self.opened_at = time.monotonic()
        self.frame_at: float | None = None
        self.failure: str | None = None

    def run(self) -> None:
        failures = 0
        try:
            while not self._stop_event.is_set():
                ok, frame = self._cap.read()
                if ok and frame is not None and frame.size:
                    failures = 0
                    now = time.monotonic()
                    with self._cond:
                        self._frame, self.frame_at, self._seq = frame, now, self._seq + 1
                        self._cond.notify_all()
                    self._stats.frames_read += 1
                    self._stats.last_frame_at = now
                    continue
                failures += 1
                if failures >= MAX_READ_FAILURES:
                    self._fail(f"{failures} reads in a row failed")
                    return
                self._stop_event.wait(0.05)
        except Exception as exc:  # an OpenCV error must end the thread visibly, not silently
            self._fail(f"capture error: {exc!r}")
        finally:
            self._cap.release()

    def _fail(self, reason: str) -> None:
        with self._cond:
            self.failure = reason
            self._cond.notify_all()

    def newer_than(self, seq: int, timeout: float) -> tuple[np.ndarray, float, int] | None:
        """The newest frame, its time and number if newer than ``seq``, waiting up to ``timeout``; else None."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > seq or self.failure is not None, timeout)
            if self._seq > seq and self._frame is not None and self.frame_at is not None:
                return self._frame, self.frame_at, self._seq
            return None

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=_join_timeout())
        if self.is_alive():
            log.warning("%s is still blocked in a read; it releases the camera when the read returns", self.name)


__all__ = ["Capture", "CameraStats", "FileFrames", "FrameGrabber", "classify_source", "sequence_exists",
           "shorten_v4l2_wait"]
