"""Test media for the camera path: Wallet-pass codes on a phone screen, as a till camera would see them.

Nothing here is mocked: codes are written by zxing-cpp's own encoder, pasted onto a phone-shaped screen,
warped in perspective, blurred, lit by a screen-glare gradient and sprinkled with sensor noise, then written
as real MJPG ``.avi`` files or PNG image sequences that OpenCV's ``VideoCapture`` reads back. The tests and
``bench/scanners.py`` rely on:

- :func:`card_frames` / :func:`scene_frames`: lists of BGR frames (``uint8``, H x W x 3) with a little hand
  shake between frames, reproducible from ``seed``;
- :func:`write_video` / :func:`write_sequence`: files in a directory the caller owns (``tmp_path``);
- :class:`LiveCamera`: an object with the ``cv2.VideoCapture`` methods the camera source uses, that plays
  frames in real time like a webcam and can be "unplugged", for the live (grabber thread) path.

Keep clips short (a few seconds at 640x480): MJPG of a noisy frame is about 50 kB.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import zxingcpp

from posbridge.scanners.decoders import zxing_format

Size = tuple[int, int]  # (width, height), as OpenCV writes sizes
VGA: Size = (640, 480)
HD: Size = (1280, 720)

#: What a Wallet pass typically holds in each format: a card URL in 2-D codes, a short id in Code 128.
SAMPLE_TEXT = {
    "qr": "https://mystore.omniwallet.cloud/c/OW7K2M9Q",
    "aztec": "https://mystore.omniwallet.cloud/c/OW7K2M9Q",
    "pdf417": "OW7K2M9Q-4000123456789",
    "code128": "OW7K2M9Q",
    "datamatrix": "OW7K2M9Q",
    "ean13": "4006381333931",
    "ean8": "96385074",
}


def wallet_style(fmt: str) -> dict[str, float]:
    """Distortions under which each format must still decode at 640x480: perspective, blur, noise and glare.

    Wide codes (PDF417, Code 128) are held nearly level and fill more of the frame, as people do with them;
    zxing-cpp's PDF417 reader loses rows beyond about 4 degrees of rotation at this resolution.
    """
    wide = fmt in ("pdf417", "code128", "ean13", "ean8")
    return {
        "code_frac": 0.8 if wide else 0.5,
        "angle": 3.0 if wide else 8.0,
        "tilt": 0.12,
        "blur": 1.2,
        "noise": 8.0,
        "glare": 0.35,
    }


def code_image(text: str, fmt: str, *, module_px: int = 1, gs1: bool = False) -> np.ndarray:
    """The code as zxing-cpp draws it (grayscale, black on white, with its quiet zone).

    ``gs1=True``: a GS1 code (FNC1 in first position) of ``text`` written as "(8018)123...", AI by AI."""
    barcode = zxingcpp.create_barcode(text, zxing_format(fmt), gs1=True) if gs1 else \
        zxingcpp.create_barcode(text, zxing_format(fmt))
    return np.asarray(barcode.to_image(scale=module_px, add_quiet_zones=True)).copy()


@functools.lru_cache(maxsize=8)
def _background(size: Size) -> np.ndarray:
    """The counter the camera looks at: a warm gradient with soft blotches, not flat (the same in every frame)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 90 + 50 * (x / w) + 25 * (y / h)
    blotches = np.random.default_rng(0).normal(0, 18, (6, 8)).astype(np.float32)
    gray = base + cv2.resize(blotches, (w, h), interpolation=cv2.INTER_CUBIC)
    frame = np.clip(np.stack([gray * 0.75, gray * 0.9, gray * 1.05], axis=-1), 0, 255).astype(np.uint8)
    frame.flags.writeable = False
    return frame


@functools.lru_cache(maxsize=8)
def _glare_band(size: Size) -> np.ndarray:
    """A diagonal streak of reflected light across the middle of the frame, 0-1 (cached, read-only)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    band = np.exp(-(((x / w + y / h) - 0.8) ** 2) / 0.05)[..., None]
    band.flags.writeable = False
    return band


def _phone(code: np.ndarray | None, size: Size, code_frac: float) -> np.ndarray:
    """A phone face-on: dark body, white pass with a coloured header, the code centred below it."""
    w, h = size
    if code is None:
        code = np.full((8, 8), 255, np.uint8)
    scale = code_frac * min(w / code.shape[1], h / code.shape[0])
    cw, ch = max(1, int(code.shape[1] * scale)), max(1, int(code.shape[0] * scale))
    code = cv2.resize(code, (cw, ch), interpolation=cv2.INTER_NEAREST)
    screen_w, screen_h = int(cw * 1.25) + 40, int(ch * 1.2) + 110
    body = 16
    phone = np.full((screen_h + 2 * body, screen_w + 2 * body, 3), 28, np.uint8)
    screen = phone[body:-body, body:-body]
    screen[:] = 246
    screen[:70] = (160, 90, 40)  # the pass's brand colour strip
    top = 80 + (screen_h - 80 - ch) // 2
    left = (screen_w - cw) // 2
    screen[top:top + ch, left:left + cw] = code[..., None]
    return phone


def phone_frame(
    code: np.ndarray | None,
    size: Size = VGA,
    *,
    rng: np.random.Generator | None = None,
    code_frac: float = 0.5,
    center: tuple[float, float] = (0.5, 0.5),
    angle: float = 8.0,
    tilt: float = 0.08,
    blur: float = 1.2,
    noise: float = 6.0,
    glare: float = 0.3,
) -> np.ndarray:
    """One camera frame of a phone showing ``code`` (``None``: a phone with an empty pass, no code).

    ``code_frac`` is the share of the frame's smaller side the code spans; ``angle`` an in-plane rotation in
    degrees; ``tilt`` the perspective (0: face-on); ``blur`` a Gaussian sigma in pixels; ``noise`` the sensor
    noise sigma in grey levels; ``glare`` how far (0-1) a diagonal screen reflection washes the picture to white.
    """
    rng = rng or np.random.default_rng(0)
    w, h = size
    frame = _background(size).copy()
    phone = _phone(code, size, code_frac)
    ph, pw = phone.shape[:2]
    fit = min(0.92 * w / pw, 0.92 * h / ph, 1.0)
    corners = np.array([[-pw, -ph], [pw, -ph], [pw, ph], [-pw, ph]], np.float32) * (fit / 2)
    # perspective: the far edge shrinks, as when the phone leans back from the camera
    corners[:2, 0] *= 1 - tilt
    corners[:2, 1] *= 1 - tilt / 2
    theta = np.deg2rad(angle)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], np.float32)
    dest = corners @ rot.T + np.array([center[0] * w, center[1] * h], np.float32)
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, dest)
    cv2.warpPerspective(phone, matrix, size, dst=frame, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
    if glare > 0:
        veil = glare * _glare_band(size)
        frame = (frame * (1 - veil) + 255 * veil).astype(np.uint8)
    if blur > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), blur)
    if noise > 0:
        grain = rng.standard_normal((h, w, 1), dtype=np.float32) * noise
        frame = np.clip(frame + grain, 0, 255).astype(np.uint8)
    return frame


def card_frames(
    text: str,
    fmt: str,
    *,
    count: int,
    size: Size = VGA,
    seed: int = 0,
    shake: float = 3.0,
    gs1: bool = False,
    **distort: float,
) -> list[np.ndarray]:
    """``count`` frames of one card held in view, moving by up to ``shake`` pixels and half a degree."""
    rng = np.random.default_rng(seed)
    code = code_image(text, fmt, gs1=gs1)
    angle = float(distort.pop("angle", 8.0))
    w, h = size
    frames = []
    for _ in range(count):
        dx, dy = rng.uniform(-shake, shake, 2)
        center = (0.5 + float(dx) / w, 0.5 + float(dy) / h)
        wobble = angle + float(rng.uniform(-0.5, 0.5))
        frames.append(phone_frame(code, size, rng=rng, center=center, angle=wobble, **distort))
    return frames


def scene_frames(count: int, *, size: Size = VGA, seed: int = 0, phone: bool = False) -> list[np.ndarray]:
    """``count`` frames without any code: the bare counter, or (``phone=True``) a phone showing an empty pass."""
    rng = np.random.default_rng(seed)
    if phone:
        return [phone_frame(None, size, rng=rng) for _ in range(count)]
    frames = []
    for _ in range(count):
        grain = rng.standard_normal((size[1], size[0], 1), dtype=np.float32) * 6.0
        frames.append(np.clip(_background(size) + grain, 0, 255).astype(np.uint8))
    return frames


def garbage_frames(size: Size = VGA, *, seed: int = 0) -> list[np.ndarray]:
    """Frames a broken camera might deliver: random noise, all black, all white, half a frame torn off."""
    rng = np.random.default_rng(seed)
    w, h = size
    torn = scene_frames(1, size=size, seed=seed)[0]
    torn[h // 2:] = 0
    return [
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        np.zeros((h, w, 3), np.uint8),
        np.full((h, w, 3), 255, np.uint8),
        torn,
    ]


def write_video(path: Path, frames: Sequence[np.ndarray], *, fps: float = 15.0) -> Path:
    """An MJPG ``.avi`` of ``frames`` (all the same size). Returns ``path``."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG to {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path


def write_sequence(directory: Path, frames: Sequence[np.ndarray], *, name: str = "%03d.png") -> str:
    """PNG files ``000.png``, ``001.png``... in ``directory``; returns the ``%03d`` pattern for CAP_IMAGES."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        cv2.imwrite(str(directory / (name % index)), frame)
    return str(directory / name)


class LiveCamera:
    """A webcam stand-in: plays ``frames`` in real time at ``fps`` through the ``VideoCapture`` methods.

    ``read()`` blocks until the next frame is due, like a camera's driver, and records when each frame was
    "presented" (``presented_at[i]``, ``time.monotonic()``), so a latency can be measured from it. After the
    last frame it repeats the last one (``hold_last``) or, like an unplugged camera, fails every read
    (``read() -> (False, None)``). :meth:`unplug` and :meth:`freeze` break it on demand.
    """

    def __init__(self, frames: Sequence[np.ndarray], *, fps: float = 30.0, hold_last: bool = False) -> None:
        self.frames = list(frames)
        self.fps = fps
        self.hold_last = hold_last
        self.presented_at: list[float] = []
        self.released = False
        self._unplugged = threading.Event()
        self._frozen = threading.Event()
        self._stall = 0.5
        self._start: float | None = None

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return not self.released

    def set(self, prop: int, value: float) -> bool:
        return False

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def unplug(self) -> None:
        """From now on every read fails at once, as after the USB cable is pulled."""
        self._unplugged.set()

    def freeze(self, stall: float = 0.5) -> None:
        """From now on every read blocks ``stall`` seconds and fails, as a hung V4L2 driver does."""
        self._stall = stall
        self._frozen.set()

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self._frozen.is_set():
            time.sleep(self._stall)
            return False, None
        if self._start is None:
            self._start = time.monotonic()
        index = len(self.presented_at)
        if index >= len(self.frames) and not self.hold_last:
            self._unplugged.set()
        due = self._start + index / self.fps
        if self._unplugged.wait(max(0.0, due - time.monotonic())):
            time.sleep(0.01)
            return False, None
        self.presented_at.append(time.monotonic())
        return True, self.frames[min(index, len(self.frames) - 1)]

    def release(self) -> None:
        self.released = True
