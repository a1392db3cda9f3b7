"""The ScanSource contract, one set of tests run against every driver (like huey's StorageTests mixin).

Each driver runs on its real stand-in device: serial on a pseudo-terminal found by USB ids, USB HID (HID POS and
keyboard mode) on the simulated pyusb bus, the camera on a stand-in live camera fed generated frames, stdin on a
pipe. The contract (``posbridge.scanners.ScanSource``): open; read returns ``[]`` when idle and one event per code
with exactly its text; close twice is safe; read before open or after close raises ScannerGone; an unplugged
device raises ScannerGone (never SourceExhausted, so the supervisor reopens it) and reads again once re-plugged;
a source that ends for good raises SourceExhausted on every read after its last code.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from serial.tools.list_ports_common import ListPortInfo

from posbridge.config import CameraScanner, HidScanner, SerialScanner, StdinScanner
from posbridge.scanners import ScanEvent, ScannerGone, ScanSource, SourceExhausted
from posbridge.scanners.camera import CameraSource
from posbridge.scanners.hid import HidSource
from posbridge.scanners.serial import SerialSource
from posbridge.scanners.stdin import StdinSource
from tests.support import usbsim
from tests.support.codes import card_frames, scene_frames, wallet_style, write_video
from tests.support.pty import PtyScanner

CODES = ["OW7K2M9Q", "AB12CD34"]
DEADLINE = 10.0  # generous: the machine is shared; every wait below ends at the event, not at the deadline


def read_until(source: ScanSource, count: int, deadline: float = DEADLINE) -> list[ScanEvent]:
    events: list[ScanEvent] = []
    end = time.monotonic() + deadline
    while len(events) < count and time.monotonic() < end:
        events += source.read()
    return events


def read_until_raises(source: ScanSource, deadline: float = DEADLINE) -> BaseException:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            source.read()
        except Exception as exc:  # noqa: BLE001 - the contract says which; the test asserts it
            return exc
    raise AssertionError("read() never raised")


class Harness:
    """One driver on its stand-in device. Subclasses implement what their device can do."""

    name = "contract"

    def make(self) -> ScanSource:
        raise NotImplementedError

    def send(self, text: str) -> None:
        """The device sends one code, framed as its protocol frames it."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class Unpluggable(Harness):
    def unplug(self) -> None:
        raise NotImplementedError

    def replug(self) -> None:
        raise NotImplementedError


class Ending(Harness):
    def end(self) -> None:
        """The input ends for good (end of file)."""
        raise NotImplementedError


# the contract ------------------------------------------------------------------------------------------------------

class ScanSourceContract:
    """Every ScanSource."""

    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        raise NotImplementedError

    @pytest.fixture
    def source(self, harness: Harness) -> Iterator[ScanSource]:
        source = harness.make()
        source.open()
        try:
            yield source
        finally:
            source.close()

    def test_an_idle_device_reads_nothing(self, source: ScanSource) -> None:
        assert source.read() == []

    def test_one_code_is_one_event_with_exactly_its_text(self, harness: Harness, source: ScanSource) -> None:
        harness.send(CODES[0])
        events = read_until(source, 1)
        assert [(e.text, e.source) for e in events] == [(CODES[0], harness.name)]
        assert isinstance(events[0].raw, bytes) and events[0].raw  # what it came in: bytes, reports or frames

    def test_codes_back_to_back_are_separate_events_in_order(self, harness: Harness, source: ScanSource) -> None:
        for code in CODES:
            harness.send(code)
        assert [e.text for e in read_until(source, 2)] == CODES

    def test_read_before_open_raises_scanner_gone(self, harness: Harness) -> None:
        source = harness.make()
        with pytest.raises(ScannerGone) as caught:
            source.read()
        assert not isinstance(caught.value, SourceExhausted)
        source.close()

    def test_close_twice_is_safe_and_read_after_close_raises_scanner_gone(self, harness: Harness) -> None:
        source = harness.make()
        source.open()
        source.close()
        source.close()
        with pytest.raises(ScannerGone):
            source.read()


class UnplugContract:
    """Sources of devices that can be unplugged and come back."""

    def test_unplugged_it_raises_scanner_gone_and_reads_again_once_replugged(
            self, harness: Unpluggable, source: ScanSource) -> None:
        harness.unplug()
        gone = read_until_raises(source)
        assert isinstance(gone, ScannerGone) and not isinstance(gone, SourceExhausted), repr(gone)
        source.close()
        harness.replug()
        source.open()
        harness.send(CODES[1])
        assert [e.text for e in read_until(source, 1)] == [CODES[1]]


class ExhaustionContract:
    """Sources that can end for good."""

    def test_after_its_last_code_it_raises_source_exhausted_on_every_read(
            self, harness: Ending, source: ScanSource) -> None:
        harness.send(CODES[0])
        harness.end()
        events: list[ScanEvent] = []
        end = time.monotonic() + DEADLINE
        with pytest.raises(SourceExhausted):
            while time.monotonic() < end:
                events += source.read()
        assert [e.text for e in events] == [CODES[0]]
        for _ in range(3):
            with pytest.raises(SourceExhausted):
                source.read()


# serial: a pty found by USB ids ------------------------------------------------------------------------------------

class SerialHarness(Unpluggable):
    def __init__(self) -> None:
        self.pty = PtyScanner()

    def _ports(self) -> list[ListPortInfo]:
        if self.pty.master < 0:
            return []
        port = ListPortInfo(self.pty.path)
        port.vid, port.pid, port.serial_number = 0x0C2E, 0x0B61, "C0NTRACT"
        return [port]

    def make(self) -> ScanSource:
        config = SerialScanner(type="serial", name=self.name, vid=0x0C2E, pid=0x0B61, framing="eol")
        return SerialSource(config, comports=self._ports)

    def send(self, text: str) -> None:
        self.pty.scan(text)

    def unplug(self) -> None:
        self.pty.unplug()

    def replug(self) -> None:
        self.pty = PtyScanner()

    def close(self) -> None:
        self.pty.unplug()


class TestSerialSource(ScanSourceContract, UnplugContract):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        harness = SerialHarness()
        yield harness
        harness.close()


# USB HID on the simulated bus --------------------------------------------------------------------------------------

class HidHarness(Unpluggable):
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.device = usbsim.honeywell_pos() if mode == "pos" else usbsim.keyboard_scanner()
        self.backend = usbsim.SimBackend(self.device)

    def make(self) -> ScanSource:
        config = HidScanner(type="hid", name=self.name, vid=self.device.vid, pid=self.device.pid, mode=self.mode,
                            read_timeout=0.3)
        return HidSource(config, backend=self.backend)

    def send(self, text: str) -> None:
        if self.mode == "pos":
            self.device.send(*usbsim.honeywell_reports(text))
        else:
            self.device.send(*usbsim.keyboard_reports(text, "us"))

    def unplug(self) -> None:
        self.device.unplug()

    def replug(self) -> None:
        self.device.replug()


class TestHidPosSource(ScanSourceContract, UnplugContract):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        yield HidHarness("pos")


class TestHidKeyboardSource(ScanSourceContract, UnplugContract):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        yield HidHarness("keyboard")


# camera: a stand-in live camera fed generated frames ---------------------------------------------------------------

class FeedCamera:
    """A webcam stand-in with the ``cv2.VideoCapture`` methods: shows the counter, or the frames queued by
    :meth:`show`, at about 30 fps; unplugged, every read fails at once."""

    _idle = scene_frames(1)[0]

    def __init__(self) -> None:
        self.queue: deque[np.ndarray] = deque()
        self.unplugged = threading.Event()
        self.released = False

    def show(self, frames: list[np.ndarray]) -> None:
        self.queue.extend(frames)

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return not self.released

    def set(self, prop: int, value: float) -> bool:
        return False

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.unplugged.wait(1 / 30):
            return False, None
        return True, self.queue.popleft() if self.queue else self._idle

    def release(self) -> None:
        self.released = True


class CameraHarness(Unpluggable, Ending):
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.camera = FeedCamera()
        self.shown: list[str] = []

    @staticmethod
    def frames(text: str) -> list[np.ndarray]:
        """The card held in view for a second, then 0.7 s of counter: enough looks even on a loaded machine."""
        held = card_frames(text, "qr", count=6, **wallet_style("qr"))
        return held * 5 + scene_frames(21, seed=len(text))

    def make(self) -> ScanSource:
        config = CameraScanner(type="camera", name=self.name, source="stand-in", max_fps=30, formats=["qr"])
        return CameraSource(config, capture=lambda: self.camera)

    def send(self, text: str) -> None:
        self.shown.append(text)
        self.camera.show(self.frames(text))

    def unplug(self) -> None:
        self.camera.unplugged.set()

    def replug(self) -> None:
        self.camera = FeedCamera()


class FileCameraHarness(Ending):
    """The camera reading a video file: what it was sent is written into the file, which then ends."""

    def __init__(self, directory: Path) -> None:
        self.video = directory / "contract.avi"
        self.texts: list[str] = []

    def make(self) -> ScanSource:
        frames = scene_frames(3) + [f for text in self.texts for f in CameraHarness.frames(text)]
        write_video(self.video, frames, fps=15)
        config = CameraScanner(type="camera", name=self.name, source=str(self.video), formats=["qr"])
        return CameraSource(config, pace=False)

    def send(self, text: str) -> None:
        self.texts.append(text)

    def end(self) -> None:
        pass


class TestCameraSource(ScanSourceContract, UnplugContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[Harness]:
        yield CameraHarness(tmp_path)


class TestCameraFileSource(ExhaustionContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[Harness]:
        yield FileCameraHarness(tmp_path)

    @pytest.fixture
    def source(self, harness: Harness) -> Iterator[ScanSource]:
        harness.send(CODES[0])  # the file must hold its codes before it is opened
        source = harness.make()
        source.open()
        harness.send = lambda text: None  # type: ignore[method-assign]
        try:
            yield source
        finally:
            source.close()


# stdin: a pipe -------------------------------------------------------------------------------------------------------

class StdinHarness(Ending):
    def __init__(self) -> None:
        read_end, self.write_end = os.pipe()
        self.stream: Any = os.fdopen(read_end, "rb", buffering=0)

    def make(self) -> ScanSource:
        return StdinSource(StdinScanner(type="stdin", name=self.name), stream=self.stream)

    def send(self, text: str) -> None:
        os.write(self.write_end, text.encode() + b"\n")

    def end(self) -> None:
        os.close(self.write_end)
        self.write_end = -1

    def close(self) -> None:
        if self.write_end >= 0:
            os.close(self.write_end)
        self.stream.close()


class TestStdinSource(ScanSourceContract, ExhaustionContract):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        harness = StdinHarness()
        yield harness
        harness.close()
