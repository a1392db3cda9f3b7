"""Decoders on generated phone-screen frames: what each reads, what it refuses, and how it says so."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from posbridge.config import CameraScanner
from posbridge.scanners.decoders import (
    Decoded,
    DecoderUnavailable,
    DecoderUnsupported,
    ZbarDecoder,
    ZxingDecoder,
    check_decoder,
    likely_regions,
    make_decoder,
)
from tests.support.codes import HD, SAMPLE_TEXT, card_frames, garbage_frames, scene_frames, wallet_style

WALLET = ["qr", "aztec", "pdf417", "code128"]
AIM = {"qr": "]Q1", "aztec": "]z0", "pdf417": "]L2", "code128": "]C0"}


def gray_card(fmt: str, seed: int = 0) -> np.ndarray:
    return gray_burst(fmt, count=1, seed=seed)[0]


def gray_burst(fmt: str, count: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Half a second of a card held in front of the camera: frames differ by hand shake and noise.

    Single frames are not all readable (zxing-cpp reads about 60% of these PDF417 frames, pyzbar about 40% of
    the Code 128 ones), as with a real camera; a burst is what a scan gets.
    """
    frames = card_frames(SAMPLE_TEXT[fmt], fmt, count=count, seed=seed, **wallet_style(fmt))
    return [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in frames]


def reads(decoder: ZxingDecoder | ZbarDecoder, frames: list[np.ndarray]) -> list[list[Decoded]]:
    """What the decoder found in each frame that held anything."""
    return [found for found in map(decoder.decode, frames) if found]


def camera(**settings: object) -> CameraScanner:
    return CameraScanner.model_validate({"type": "camera", "name": "till-cam", **settings})


@pytest.mark.parametrize("fmt", WALLET)
def test_zxing_reads_each_wallet_format_on_a_tilted_blurred_noisy_glared_phone(fmt: str) -> None:
    found = reads(ZxingDecoder(WALLET), gray_burst(fmt))
    assert len(found) >= (2 if fmt == "pdf417" else 8)
    assert all(f == [Decoded(SAMPLE_TEXT[fmt], SAMPLE_TEXT[fmt].encode(), fmt, AIM[fmt])] for f in found)


def test_zxing_looks_only_for_the_configured_formats() -> None:
    assert ZxingDecoder(["code128"]).decode(gray_card("qr")) == []
    assert [d.symbology for d in ZxingDecoder(["qr"]).decode(gray_card("qr"))] == ["qr"]


@pytest.mark.parametrize("fmt", ["qr", "code128"])
def test_zbar_reads_qr_and_code128(fmt: str) -> None:
    found = reads(ZbarDecoder(["qr", "code128"]), gray_burst(fmt))
    assert len(found) >= (8 if fmt == "qr" else 1)
    assert all(f == [Decoded(SAMPLE_TEXT[fmt], SAMPLE_TEXT[fmt].encode(), fmt, AIM[fmt])] for f in found)


@pytest.mark.parametrize("fmt", ["aztec", "pdf417", "datamatrix"])
def test_zbar_with_a_format_it_cannot_read_is_refused_and_points_to_zxing(fmt: str) -> None:
    with pytest.raises(DecoderUnsupported) as caught:
        ZbarDecoder(["qr", fmt])
    assert isinstance(caught.value, ValueError)
    assert fmt in str(caught.value)
    assert 'decoder = "zxing"' in str(caught.value)


def test_no_formats_at_all_is_refused_by_both_decoders() -> None:
    for decoder in (ZxingDecoder, ZbarDecoder):
        with pytest.raises(DecoderUnsupported, match="no barcode formats"):
            decoder([])


def test_missing_libzbar_says_to_install_libzbar0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyzbar", None)  # what a machine without libzbar0 looks like to Python
    with pytest.raises(DecoderUnavailable, match=r"apt-get install libzbar0"):
        ZbarDecoder(["qr"])
    problems = check_decoder(camera(decoder="zbar", formats=["qr"]))
    assert len(problems) == 1 and "install libzbar0 (apt-get install libzbar0)" in problems[0]


def test_check_decoder_reports_each_bad_camera_setting_for_doctor() -> None:
    assert check_decoder(camera()) == []
    assert check_decoder(camera(decoder="zbar", formats=["qr", "code128"])) == []
    problems = check_decoder(camera(decoder="zbar"))  # default formats include aztec and pdf417
    assert len(problems) == 1
    assert "'till-cam'" in problems[0] and "aztec" in problems[0] and "pdf417" in problems[0]
    assert 'decoder = "zxing"' in problems[0]
    assert check_decoder(camera(formats=[]))[0].endswith(
        'no barcode formats configured; set formats, e.g. ["qr", "aztec", "pdf417", "code128"]'
    )


def test_make_decoder_follows_the_configuration() -> None:
    assert make_decoder(camera()).name == "zxing"
    zbar = make_decoder(camera(decoder="zbar", formats=["qr", "qr", "ean13"]))
    assert zbar.name == "zbar" and zbar.formats == ("qr", "ean13")


@pytest.mark.parametrize("decoder", [ZxingDecoder(WALLET), ZbarDecoder(["qr", "code128"])], ids=["zxing", "zbar"])
def test_garbage_pictures_decode_to_nothing_without_raising(decoder: ZxingDecoder | ZbarDecoder) -> None:
    pictures = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in garbage_frames()]
    pictures += [np.zeros((1, 1), np.uint8), np.zeros((0, 0), np.uint8), np.zeros((480, 0), np.uint8)]
    for picture in pictures:
        assert decoder.decode(picture) == []


@pytest.mark.parametrize("fmt", WALLET)
def test_the_first_pass_on_a_720p_frame_reads_what_the_whole_frame_search_reads(fmt: str) -> None:
    style = dict(wallet_style(fmt))
    frames = []
    for code_frac in (0.15, 0.35, style["code_frac"]):  # far, mid, close
        style["code_frac"] = code_frac
        frames += [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)
                   for f in card_frames(SAMPLE_TEXT[fmt], fmt, count=2, size=HD, **style)]
    fast, whole = ZxingDecoder(WALLET), ZxingDecoder(WALLET, first_pass=False)
    for frame in frames:
        expected = {(d.text, d.symbology) for d in whole.decode(frame)}
        assert expected <= {(d.text, d.symbology) for d in fast.decode(frame)}


def test_likely_regions_finds_a_small_code_and_nothing_on_an_empty_pass_or_a_bare_counter() -> None:
    def half(frame: np.ndarray) -> np.ndarray:
        return cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (640, 360), interpolation=cv2.INTER_AREA)

    for empty in scene_frames(3, size=HD, phone=True) + scene_frames(2, size=HD):
        assert likely_regions(half(empty)) is None
    style = dict(wallet_style("qr"), code_frac=0.15)
    small = half(card_frames(SAMPLE_TEXT["qr"], "qr", count=1, size=HD, **style)[0])
    region = likely_regions(small)
    assert region is not None
    x, y, w, h = region
    assert x < 320 < x + w and y < 180 < y + h and w * h < small.size / 2  # around the centred code, not everything
