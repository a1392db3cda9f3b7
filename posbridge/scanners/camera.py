"""Camera input: OpenCV capture, decoded by zxing-cpp or pyzbar, as a :class:`~posbridge.scanners.ScanSource`.

``source`` (``type = "camera"``) is one of:

- a device: an index (``0``), ``/dev/video0``, or better a ``/dev/v4l/by-id/...`` path that survives re-plugging,
  opened with V4L2 on Linux; or a network stream (``rtsp://...``). A grabber thread reads every frame and keeps
  only the newest, so ``read()`` never decodes a stale buffered frame (V4L2 buffers 4 by default);
- a video file (``demo.avi``) or an image sequence (``frames/%03d.png``, read with ``CAP_IMAGES``): frames come in
  order, paced to ``max_fps`` unless the caller turns pacing off (tests, benchmarks). ``loop = true`` replays it
  forever. Unreadable frames inside it (a truncated PNG) are skipped and counted. At the end of a non-looping
  file ``read()`` raises :class:`~posbridge.scanners.SourceExhausted` (every time it is called
  again, too): the supervisor then stops reading it, instead of reopening it and scanning every card again.

What callers rely on:

- **A code must be seen twice before it is a scan**: it is reported once it has been decoded in
  ``confirm_frames`` frames (default 2) within ``confirm_window`` (0.5 s), so a one-frame misread by the decoder
  never becomes a scan. Only decoded frames count, and a frame is never skipped while a code waits for its
  confirmation, so this costs one frame time (67 ms at 15 fps; ``bench/scanners.py`` measures it).
- **One card held in view is one scan**, whatever the debounce: a code is reported when it is confirmed, and
  again only after it was out of view for ``absent_after`` (0.5 s). Files are timed by their own clock (frame
  number / fps), so this holds at any playback speed.
- **The text is the code's own content** (see :mod:`posbridge.scanners.decoders`): NUL padding, STX/ETX and GS1
  separators arrive as the bytes a serial scanner would send; the AIM ID (``]Q3`` for GS1) travels in
  ``ScanEvent.aim``.
- **An unchanged frame is not decoded**: its 1/8-size thumbnail is compared with the last decoded frame's; when
  almost no pixel moved, that decode's result stands (a card held still stays "seen"). A decode is forced every
  ``refresh`` (0.5 s) anyway, so a picture that only sharpens (autofocus) is not missed for long. An idle counter
  costs two decodes a second instead of ``max_fps``.
- **A vanished camera raises** :class:`~posbridge.scanners.ScannerGone` from ``read()`` (its ``/dev`` node is
  gone, reads keep failing, or no frame came for ``stale_after`` s), so the supervisor reopens it. ``open()``
  raises :class:`~posbridge.scanners.ScannerUnavailable` naming the device and the fix. A decoder that cannot
  serve the configured formats (zbar with Aztec/PDF417) raises ``DecoderUnsupported`` from the constructor.
- :attr:`CameraSource.stats` counts frames read, decoded and skipped and the seconds spent decoding (metrics).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Callable

import numpy as np

from posbridge.config import CameraScanner
from posbridge.scanners import ScanEvent, ScannerGone, ScannerUnavailable
from posbridge.errors import DecoderUnavailable
from posbridge.scanners.decoders import Decoded, Decoder, make_decoder
from posbridge.scanners.frames import (Capture, CameraStats, FileFrames, FrameGrabber, classify_source,
                                       sequence_exists, shorten_v4l2_wait)

import cv2  # noqa: I001

log = logging.getLogger(__name__)

ABSENT_AFTER = 0.5  # s out of view before the same code counts as a new scan
REFRESH = 0.5  # s: decode at least this often even when the picture looks unchanged
STALE_AFTER = 3.0  # s without a new frame from a live camera -> ScannerGone
_THUMB_DIVISOR = 8  # thumbnail = frame / 8 on each side
_PIXEL_DELTA = 12  # grey levels a thumbnail pixel must move to count as changed (well above sensor noise)
_CHANGED_SHARE = 0.002  # share of changed thumbnail pixels that makes a frame worth decoding
_LIST_HINT = "`posbridge scanners list` shows the cameras found"


class _Presence:
    """Which codes are in view, to report each once per appearance, once confirmed.

    A code is confirmed when it was decoded in ``confirm_frames`` frames within ``confirm_window`` seconds; it is
    reported then, and again only after it was out of view for ``absent_after`` seconds.
    """

    def __init__(self, absent_after: float, confirm_frames: int, confirm_window: float) -> None:
        self.absent_after = absent_after
        self.confirm_frames = confirm_frames
        self.confirm_window = confirm_window
        self._last_seen: dict[tuple[str, str], float] = {}  # confirmed codes in view
        self._reads: dict[tuple[str, str], list[float]] = {}  # codes waiting for confirmation: their read times

    @property
    def waiting(self) -> bool:
        """True while a code has been read but not yet confirmed (the next frame must be decoded)."""
        return bool(self._reads)

    def arrivals(self, codes: list[Decoded], now: float, decoded: bool) -> list[Decoded]:
        """The codes among ``codes`` (seen at ``now``) confirmed just now and not in view just before.

        ``decoded``: the codes come from decoding this frame (not from an unchanged frame's last decode), so
        they count as a read towards confirmation.
        """
        fresh = []
        for code in codes:
            key = (code.symbology, code.text)
            seen = self._last_seen.get(key)
            if seen is not None and now - seen <= self.absent_after:
                self._last_seen[key] = now  # still in view: not news
                continue
            if decoded:
                reads = [t for t in self._reads.get(key, []) if now - t <= self.confirm_window] + [now]
                self._reads[key] = reads
            if len(self._reads.get(key, ())) >= self.confirm_frames:
                del self._reads[key]
                self._last_seen[key] = now
                fresh.append(code)
        self._last_seen = {k: t for k, t in self._last_seen.items() if now - t <= self.absent_after}
        self._reads = {k: r for k, r in self._reads.items() if now - r[-1] <= self.confirm_window}
        return fresh


class CameraSource:
    """A camera (or a video file) as a scan source; the module docstring says what callers rely on.

    ``pace=False`` reads files as fast as they decode (tests, benchmarks). ``capture`` replaces
    ``cv2.VideoCapture`` with a factory of stand-in cameras, handled as live devices (tests, benchmark).
    The other keywords override this module's timing constants.
    """

    def __init__(self, config: CameraScanner, *, pace: bool = True, capture: Callable[[], Capture] | None = None,
                 absent_after: float = ABSENT_AFTER, refresh: float = REFRESH,
                 stale_after: float = STALE_AFTER) -> None:
        self.name = config.name
        self.config = config
        self.stats = CameraStats()
        self.kind, self.target = ("device", "stand-in camera") if capture else classify_source(config.source)
        self.describe = f"camera {self.name!r} ({self.target})"  # how log lines and errors name it
        self._capture_factory = capture
        self._pace = pace
        self._absent_after = absent_after
        self._refresh = refresh
        self._stale_after = stale_after
        self._decoder: Decoder | None = None
        try:
            self._decoder = make_decoder(config)  # DecoderUnsupported is a configuration error: raise it now
        except DecoderUnavailable:
            pass  # the library may be installed later: open() reports it as ScannerUnavailable
        self._file: FileFrames | None = None
        self._grabber: FrameGrabber | None = None
        self._reset()

    def _reset(self) -> None:
        self._presence = _Presence(self._absent_after, self.config.confirm_frames, self.config.confirm_window)
        self._last_seq = 0
        self._last_look = 0.0
        self._last_thumb: np.ndarray | None = None
        self._last_codes: list[Decoded] = []
        self._last_decode_at = float("-inf")

    @property
    def finished(self) -> bool:
        """True once a non-looping video file or image sequence has been read to its end (until closed)."""
        return self._file is not None and self._file.finished

    def open(self) -> None:
        self.close()
        if self._decoder is None:
            try:
                self._decoder = make_decoder(self.config)
            except DecoderUnavailable as exc:
                raise ScannerUnavailable(f"{self.describe}: {exc}") from None
        self._reset()
        if self.kind in ("file", "images"):
            self._file = FileFrames(self._open_file, loop=self.config.loop, max_fps=self.config.max_fps,
                                     pace=self._pace, stats=self.stats, describe=self.describe)
            return
        cap = self._capture_factory() if self._capture_factory else self._open_device()
        if not cap.isOpened():
            cap.release()
            raise ScannerUnavailable(f"{self.describe} cannot be opened: busy in another program, not a capture "
                                     f"device, or the service user is not in the video group; {_LIST_HINT}")
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.config.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
        if self.config.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
        log.info("%s opened at %dx%d", self.describe, cap.get(cv2.CAP_PROP_FRAME_WIDTH),
                 cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._grabber = FrameGrabber(cap, self.stats, self.name)
        self._grabber.start()

    def _device_path(self) -> str | None:
        """The ``/dev`` node behind the source, when there is one to watch."""
        if self.kind != "device" or self._capture_factory is not None:
            return None
        if isinstance(self.target, int):
            return f"/dev/video{self.target}" if sys.platform.startswith("linux") else None
        return str(self.target)

    def _open_device(self) -> Capture:
        path = self._device_path()
        if path is not None and not os.path.exists(path):
            raise ScannerUnavailable(f"{self.describe}: {path} does not exist; is the camera plugged in? {_LIST_HINT} "
                                     f"(a /dev/v4l/by-id/... path stays the same when it is re-plugged)")
        if path is not None and not os.access(path, os.R_OK | os.W_OK):
            raise ScannerUnavailable(f"{self.describe}: permission denied on {path}; add the service user to the "
                                     f"video group (SupplementaryGroups=video in the unit, or usermod -aG video USER)")
        backend = cv2.CAP_V4L2 if self.kind == "device" and sys.platform.startswith("linux") else cv2.CAP_ANY
        if backend == cv2.CAP_V4L2:
            shorten_v4l2_wait()
        return cv2.VideoCapture(self.target, backend)

    def _open_file(self) -> Capture:
        path = str(self.target)
        if not (sequence_exists(path) if self.kind == "images" else os.path.isfile(path)):
            raise ScannerUnavailable(f"{self.describe}: {path} does not exist; source must be a camera (0, "
                                     f"/dev/video0, /dev/v4l/by-id/...), a video file or an image pattern such as "
                                     f"frames/%03d.png")
        cap = cv2.VideoCapture(path, cv2.CAP_IMAGES if self.kind == "images" else cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise ScannerUnavailable(f"{self.describe}: OpenCV cannot read {path} as a video or image sequence")
        return cap

    def read(self) -> list[ScanEvent]:
        if self._file is not None:
            frame, at = self._file.next()
        elif self._grabber is not None:
            got = self._next_live_frame(self._grabber)
            if got is None:
                return []
            frame, at = got
        else:
            raise ScannerGone(f"{self.describe} is not open")
        codes, decoded = self._look(frame, at)
        events = [ScanEvent(c.text, c.raw, c.symbology, self.name, aim=c.aim)
                  for c in self._presence.arrivals(codes, at, decoded)]
        self.stats.scans += len(events)
        return events

    def _next_live_frame(self, grabber: FrameGrabber) -> tuple[np.ndarray, float] | None:
        wait = self._last_look + 1.0 / self.config.max_fps - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # look at most max_fps frames a second; the grabber keeps draining meanwhile
        got = grabber.newer_than(self._last_seq, timeout=1.0)
        if grabber.failure is not None:
            raise ScannerGone(f"{self.describe} stopped delivering frames ({grabber.failure})")
        path = self._device_path()
        if path is not None and not os.path.exists(path):
            raise ScannerGone(f"{self.describe}: {path} disappeared (unplugged?)")
        if got is None:
            quiet = time.monotonic() - (grabber.frame_at or grabber.opened_at)
            if quiet > self._stale_after:
                raise ScannerGone(f"{self.describe}: no frame for {quiet:.1f} s")
            return None
        frame, at, self._last_seq = got
        self._last_look = time.monotonic()
        return frame, at

    def _look(self, frame: np.ndarray, at: float) -> tuple[list[Decoded], bool]:
        """The codes in ``frame`` and whether they were decoded from it (False: the last decode's, the picture has
        not changed). A frame is always decoded while a code waits for its confirmation."""
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape[:2]
        size = (max(1, w // _THUMB_DIVISOR), max(1, h // _THUMB_DIVISOR))
        thumb = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        last = self._last_thumb
        if (last is not None and last.shape == thumb.shape and at - self._last_decode_at < self._refresh
                and not self._presence.waiting):
            if np.count_nonzero(cv2.absdiff(thumb, last) > _PIXEL_DELTA) < _CHANGED_SHARE * thumb.size:
                self.stats.frames_skipped += 1
                return self._last_codes, False
        assert self._decoder is not None
        started = time.perf_counter()
        try:
            codes = self._decoder.decode(gray)
        except Exception as exc:  # a decoder bug on one odd frame must not stop the camera
            self.stats.decode_errors += 1
            if self.stats.decode_errors == 1 or self.stats.decode_errors % 1000 == 0:
                log.warning("%s: the decoder failed on a frame (%d so far): %r", self.describe,
                            self.stats.decode_errors, exc)
            codes = []
        self.stats.decode_seconds += time.perf_counter() - started
        self.stats.frames_decoded += 1
        self._last_thumb, self._last_codes, self._last_decode_at = thumb, codes, at
        return codes, True

    def close(self) -> None:
        grabber, self._grabber = self._grabber, None
        if grabber is not None:
            grabber.stop()
        file, self._file = self._file, None
        if file is not None:
            file.close()


__all__ = ["CameraSource", "CameraStats", "classify_source"]
