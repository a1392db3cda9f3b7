"""CameraSource on real OpenCV captures of generated videos and image sequences, and on a stand-in live camera.

Files are read unpaced (``pace=False``) and timed by their own clock (15 fps here), so "held for 3 s" means
45 frames however fast the machine decodes them.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from posbridge.config import CameraScanner
from posbridge.errors import DecoderUnsupported
from posbridge.scanners import ScanEvent, ScannerGone, ScannerUnavailable, SourceExhausted
from posbridge.scanners.camera import CameraSource
from posbridge.scanners.supervisor import ScannerStatus, supervise
from tests.support.codes import (
    SAMPLE_TEXT,
    LiveCamera,
    card_frames,
    code_image,
    garbage_frames,
    phone_frame,
    scene_frames,
    wallet_style,
    write_sequence,
    write_video,
)

FPS = 15
WALLET = ["qr", "aztec", "pdf417", "code128"]
QR = SAMPLE_TEXT["qr"]


def camera(source: object, **settings: object) -> CameraScanner:
    return CameraScanner.model_validate(
        {"type": "camera", "name": "till-cam", "source": str(source), "debounce": 0, **settings}
    )


def card(fmt: str, seconds: float, seed: int = 0, text: str | None = None) -> list[np.ndarray]:
    count = round(seconds * FPS)
    return card_frames(text or SAMPLE_TEXT[fmt], fmt, count=count, seed=seed, **wallet_style(fmt))


def counter(seconds: float, seed: int = 100) -> list[np.ndarray]:
    return scene_frames(round(seconds * FPS), seed=seed)


def scan_file(config: CameraScanner, **options: object) -> tuple[list[ScanEvent], CameraSource]:
    """Every scan in a file, read to its end the way the supervisor would (open, read until exhausted, close)."""
    source = CameraSource(config, pace=False, **options)  # type: ignore[arg-type]
    source.open()
    events: list[ScanEvent] = []
    try:
        with pytest.raises(SourceExhausted):
            for _ in range(10_000):
                events += source.read()
        assert source.finished
    finally:
        source.close()
    return events, source


@pytest.mark.parametrize("fmt", WALLET)
def test_each_wallet_format_scans_once_from_a_distorted_video_with_zxing(tmp_path: Path, fmt: str) -> None:
    video = write_video(tmp_path / f"{fmt}.avi", counter(0.2) + card(fmt, 0.7) + counter(0.2), fps=FPS)
    events, _ = scan_file(camera(video))
    assert [(e.text, e.raw, e.symbology, e.source) for e in events] == [
        (SAMPLE_TEXT[fmt], SAMPLE_TEXT[fmt].encode(), fmt, "till-cam")
    ]


@pytest.mark.parametrize("fmt", ["qr", "code128"])
def test_qr_and_code128_scan_with_zbar(tmp_path: Path, fmt: str) -> None:
    video = write_video(tmp_path / f"{fmt}.avi", card(fmt, 0.7), fps=FPS)
    events, _ = scan_file(camera(video, decoder="zbar", formats=["qr", "code128"]))
    assert [(e.text, e.symbology) for e in events] == [(SAMPLE_TEXT[fmt], fmt)]


@pytest.mark.parametrize("fmt", ["aztec", "pdf417"])
def test_zbar_configured_for_aztec_or_pdf417_fails_at_construction_with_advice(fmt: str) -> None:
    with pytest.raises(DecoderUnsupported, match=rf'cannot read {fmt}.*decoder = "zxing"'):
        CameraSource(camera("unused.avi", decoder="zbar", formats=["qr", fmt]))


def test_a_card_held_in_view_for_3_seconds_is_one_scan(tmp_path: Path) -> None:
    video = write_video(tmp_path / "held.avi", card("qr", 3.0), fps=FPS)
    events, source = scan_file(camera(video))
    assert source.stats.frames_read == 45
    assert [e.text for e in events] == [QR]


def test_a_card_held_perfectly_still_is_one_scan_and_most_frames_are_not_decoded(tmp_path: Path) -> None:
    still = card("qr", 1 / FPS)[0]
    video = write_video(tmp_path / "still.avi", [still] * 45, fps=FPS)
    events, source = scan_file(camera(video))
    assert [e.text for e in events] == [QR]
    # one decode when it appears, then one forced refresh every 0.5 s of the 3 s; the rest are skipped
    assert source.stats.frames_decoded <= 7
    assert source.stats.frames_skipped == 45 - source.stats.frames_decoded


def test_an_idle_counter_costs_about_two_decodes_a_second(tmp_path: Path) -> None:
    events, source = scan_file(camera(write_video(tmp_path / "idle.avi", counter(3.0), fps=FPS)))
    assert events == []
    assert source.stats.frames_decoded <= 7 and source.stats.frames_skipped >= 38


def test_two_different_cards_in_one_video_are_two_scans(tmp_path: Path) -> None:
    frames = counter(0.3) + card("qr", 1.0) + counter(0.3, seed=5) + card("aztec", 1.0, seed=7, text="OW2ND0002")
    events, _ = scan_file(camera(write_video(tmp_path / "two.avi", frames, fps=FPS)))
    assert [(e.text, e.symbology) for e in events] == [(QR, "qr"), ("OW2ND0002", "aztec")]


def test_the_same_card_shown_again_after_leaving_the_view_is_scanned_again(tmp_path: Path) -> None:
    frames = card("qr", 1.0) + counter(1.0) + card("qr", 1.0, seed=3)
    events, _ = scan_file(camera(write_video(tmp_path / "again.avi", frames, fps=FPS)))
    assert [e.text for e in events] == [QR, QR]


def test_a_card_unreadable_for_a_moment_while_held_is_still_one_scan(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    blurred = [phone_frame(code_image(QR, "qr"), rng=rng, blur=8.0) for _ in range(4)]  # 0.27 s of motion blur
    frames = card("qr", 1.0) + blurred + card("qr", 1.0, seed=4)
    events, source = scan_file(camera(write_video(tmp_path / "blur.avi", frames, fps=FPS)))
    assert [e.text for e in events] == [QR]


def test_a_video_file_that_does_not_exist_is_unavailable_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "demo.avi"
    with pytest.raises(ScannerUnavailable, match=str(missing)):
        CameraSource(camera(missing)).open()


def test_an_image_pattern_with_no_images_is_unavailable_naming_the_pattern(tmp_path: Path) -> None:
    pattern = tmp_path / "frames" / "%03d.png"
    with pytest.raises(ScannerUnavailable, match=str(pattern)):
        CameraSource(camera(pattern)).open()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="V4L2 device nodes")
@pytest.mark.parametrize("source", ["/dev/v4l/by-id/usb-posbridge-test-video-index0", "57"])
def test_a_camera_device_that_does_not_exist_is_unavailable_with_what_to_do(source: str) -> None:
    path = source if source.startswith("/dev/") else f"/dev/video{source}"
    with pytest.raises(ScannerUnavailable) as caught:
        CameraSource(camera(source)).open()
    assert path in str(caught.value) and "posbridge scanners list" in str(caught.value)


def test_a_file_that_is_not_a_video_is_unavailable(tmp_path: Path) -> None:
    junk = tmp_path / "notes.avi"
    junk.write_bytes(b"this is not a video\n" * 50)
    with pytest.raises(ScannerUnavailable, match="cannot read"):
        CameraSource(camera(junk)).open()


def test_garbage_frames_in_a_video_give_no_scan_and_no_crash(tmp_path: Path) -> None:
    frames = [f for f in garbage_frames() for _ in range(3)]
    events, source = scan_file(camera(write_video(tmp_path / "garbage.avi", frames, fps=FPS)))
    assert events == []
    assert source.stats.frames_read == len(frames)


def test_unreadable_images_in_a_sequence_are_skipped_and_a_later_card_still_scans(tmp_path: Path) -> None:
    frames = garbage_frames() + counter(0.2) + card("qr", 0.5)
    pattern = write_sequence(tmp_path / "seq", frames)
    (tmp_path / "seq" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # corrupt header
    good = (tmp_path / "seq" / "002.png").read_bytes()
    (tmp_path / "seq" / "002.png").write_bytes(good[: len(good) // 3])  # truncated mid-file
    events, source = scan_file(camera(pattern))
    assert [e.text for e in events] == [QR]
    assert source.stats.frames_bad >= 1
    assert source.stats.frames_read + source.stats.frames_bad == len(frames)


def test_the_end_of_an_image_sequence_is_final_so_the_supervisor_stops_instead_of_spinning(tmp_path: Path) -> None:
    pattern = write_sequence(tmp_path / "seq", card("qr", 0.4))
    source = CameraSource(camera(pattern), pace=False)
    source.open()
    try:
        events = [e for _ in range(6) for e in source.read()]  # the 6 frames
        assert [e.text for e in events] == [QR]
        for _ in range(3):  # asked again (a careless caller), it says the same and reads nothing more
            with pytest.raises(SourceExhausted, match=r"has ended \(set loop = true to replay it\)"):
                source.read()
        assert source.finished and source.stats.frames_read == 6
    finally:
        source.close()


def test_the_supervisor_reads_an_image_sequence_once_and_then_stops_supervising_it(tmp_path: Path) -> None:
    pattern = write_sequence(tmp_path / "seq", counter(0.2) + card("qr", 0.4) + counter(0.2))
    source = CameraSource(camera(pattern), pace=False)
    status = ScannerStatus(name="till-cam", type="camera")
    scans: list[ScanEvent] = []

    async def on_scan(event: ScanEvent) -> None:
        scans.append(event)

    async def run() -> None:
        await asyncio.wait_for(supervise(source, on_scan, debounce=0, stop=asyncio.Event(), status=status), 10)

    asyncio.run(run())
    assert [e.text for e in scans] == [QR]
    assert status.reconnects == 0 and "has ended" in (status.last_error or "")
    assert source.stats.frames_read == 12


def test_a_looping_video_replays_and_each_pass_is_a_new_presentation(tmp_path: Path) -> None:
    video = write_video(tmp_path / "demo.avi", card("qr", 0.5) + counter(0.7), fps=FPS)
    source = CameraSource(camera(video, loop=True), pace=False)
    source.open()
    try:
        events = [e for _ in range(3 * 18) for e in source.read()]  # three passes of 18 frames
    finally:
        source.close()
    assert [e.text for e in events] == [QR, QR, QR]
    assert not source.finished


def test_file_playback_is_paced_to_max_fps_by_default(tmp_path: Path) -> None:
    video = write_video(tmp_path / "paced.avi", counter(0.4), fps=FPS)
    source = CameraSource(camera(video, max_fps=20))
    source.open()
    started = time.monotonic()
    try:
        for _ in range(6):
            source.read()
    finally:
        source.close()
    assert time.monotonic() - started >= 5 / 20 - 0.02


def test_a_live_camera_decodes_the_newest_frame_and_drops_the_backlog() -> None:
    live = LiveCamera(counter(0.3) + card("qr", 1.5), fps=30, hold_last=True)
    source = CameraSource(camera("stand-in", max_fps=5), capture=lambda: live)
    source.open()
    try:
        events: list[ScanEvent] = []
        deadline = time.monotonic() + 3
        while not events and time.monotonic() < deadline:
            events = source.read()
        assert [e.text for e in events] == [QR]
        assert source.stats.frames_read > 2 * (source.stats.frames_decoded + source.stats.frames_skipped)
    finally:
        source.close()
    assert live.released


def test_an_unplugged_camera_raises_scanner_gone_so_the_supervisor_reopens_it() -> None:
    live = LiveCamera(counter(0.2), fps=30, hold_last=True)
    source = CameraSource(camera("stand-in"), capture=lambda: live)
    source.open()
    try:
        source.read()
        live.unplug()
        with pytest.raises(ScannerGone, match="reads in a row failed"):
            for _ in range(20):
                source.read()
    finally:
        source.close()


def test_a_camera_that_stops_delivering_frames_raises_scanner_gone_after_stale_after() -> None:
    live = LiveCamera(counter(0.2), fps=30, hold_last=True)
    source = CameraSource(camera("stand-in"), capture=lambda: live, stale_after=0.4)
    source.open()
    try:
        source.read()
        live.freeze(stall=0.3)
        started = time.monotonic()
        with pytest.raises(ScannerGone, match="no frame for"):
            for _ in range(20):
                source.read()
        assert time.monotonic() - started < 2.5
    finally:
        source.close()


def test_close_is_always_safe_and_read_before_open_says_the_camera_is_not_open(tmp_path: Path) -> None:
    source = CameraSource(camera(tmp_path / "missing.avi"))
    source.close()
    with pytest.raises(ScannerUnavailable):
        source.open()
    source.close()
    source.close()
    with pytest.raises(ScannerGone, match="is not open"):
        source.read()


# the code's own bytes, GS1 cards, confirmation -------------------------------------------------------------------

GSRN = "123456789012345675"


@pytest.mark.parametrize("decoder", ["zxing", "zbar"])
@pytest.mark.parametrize(("content", "gs1", "text", "aim"), [
    ("OW7K2M9Q\x00\x00\x00\x00", False, "OW7K2M9Q\x00\x00\x00\x00", "]Q1"),
    ("\x02OW7K2M9Q\x03", False, "\x02OW7K2M9Q\x03", "]Q1"),
    (f"(8018){GSRN}", True, f"8018{GSRN}", "]Q3"),
    (f"(10)AB12(8018){GSRN}", True, f"10AB12\x1d8018{GSRN}", "]Q3"),
], ids=["nul-padding", "stx-etx", "gs1-8018", "gs1-two-ais"])
def test_a_qr_from_the_camera_carries_the_codes_own_bytes_as_a_serial_scanner_would(
        tmp_path: Path, decoder: str, content: str, gs1: bool, text: str, aim: str) -> None:
    frames = counter(0.2) + card_frames(content, "qr", count=10, gs1=gs1, **wallet_style("qr"))
    video = write_video(tmp_path / "card.avi", frames, fps=FPS)
    events, _ = scan_file(camera(video, decoder=decoder, formats=["qr"]))
    assert [(e.text, e.raw, e.symbology, e.aim) for e in events] == [(text, text.encode(), "qr", aim)]


def test_the_card_parser_reads_the_camera_scans_like_the_same_bytes_from_a_serial_scanner(tmp_path: Path) -> None:
    from posbridge.cards import parse_card

    frames = (card_frames("OW7K2M9Q\x00\x00", "qr", count=10, **wallet_style("qr")) + counter(1.0)
              + card_frames("\x02AB12CD34\x03", "qr", count=10, seed=2, **wallet_style("qr")) + counter(1.0, seed=3)
              + card_frames(f"(8018){GSRN}", "qr", count=10, seed=4, gs1=True, **wallet_style("qr")))
    events, _ = scan_file(camera(write_video(tmp_path / "three.avi", frames, fps=FPS), formats=["qr"]))
    reads = [parse_card(e.text, symbology=e.symbology, aim=e.aim) for e in events]
    assert [(r.member_id, r.gs1_ai) for r in reads] == [("OW7K2M9Q", None), ("AB12CD34", None), (GSRN, "8018")]
    assert [parse_card(e.raw.decode("latin-1")).member_id for e in events[:2]] == ["OW7K2M9Q", "AB12CD34"]


def test_a_code_read_in_a_single_frame_is_not_a_scan_and_confirm_frames_1_makes_it_one(tmp_path: Path) -> None:
    flash = card("qr", 1 / FPS)  # one frame: a misread looks like this to the source
    frames = counter(0.5) + flash + counter(0.5, seed=7)
    video = write_video(tmp_path / "flash.avi", frames, fps=FPS)
    assert scan_file(camera(video))[0] == []
    assert [e.text for e in scan_file(camera(video, confirm_frames=1))[0]] == [QR]


def test_confirmation_needs_the_reads_within_the_confirm_window(tmp_path: Path) -> None:
    frames = counter(0.3) + card("qr", 1 / FPS) + counter(0.7, seed=3) + card("qr", 1 / FPS, seed=4) + counter(0.3)
    video = write_video(tmp_path / "apart.avi", frames, fps=FPS)
    assert scan_file(camera(video, confirm_window=0.5))[0] == []  # two reads 0.77 s apart
    assert [e.text for e in scan_file(camera(video, confirm_window=1.0))[0]] == [QR]


def test_a_held_card_is_confirmed_on_the_next_frame_even_when_the_picture_does_not_change(tmp_path: Path) -> None:
    still = card("qr", 1 / FPS)[0]
    video = write_video(tmp_path / "still.avi", counter(0.2) + [still] * 6, fps=FPS)
    source = CameraSource(camera(video, confirm_frames=2), pace=False)
    source.open()
    try:
        reads = [source.read() for _ in range(3 + 2)]  # 3 counter frames, then the card twice
    finally:
        source.close()
    assert [[e.text for e in r] for r in reads] == [[], [], [], [], [QR]]
