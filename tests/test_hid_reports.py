"""Pure decoding of HID POS and boot-keyboard reports, report descriptors and hex capture lines."""

from __future__ import annotations

import pytest

from posbridge.scanners.hidreports import (
    HidPosDecoder,
    KeyboardDecoder,
    ReportError,
    is_hid_pos,
    parse_hex_lines,
    symbology_from_aim,
)
from tests.support import usbsim


def _decode_all(decoder: HidPosDecoder, reports: list[bytes]) -> list[str]:
    return [scan.text for scan in (decoder.feed(r) for r in reports) if scan is not None]


def test_the_access_is_example_of_a_60_byte_qr_in_two_reports_decodes() -> None:
    payload = bytes(range(0x41, 0x41 + 26)) * 2 + b"12345678"
    assert len(payload) == 60
    first = bytes([0x02, 0x38]) + b"]Q0" + payload[:56] + b"s\x00\x01"
    second = bytes([0x02, 0x04]) + b"]Q0" + payload[56:] + bytes(52) + b"s\x00\x00"
    decoder = HidPosDecoder()
    assert decoder.feed(first) is None and decoder.pending
    scan = decoder.feed(second)
    assert scan is not None and scan.data == payload and scan.symbology == "qr" and scan.aim == "]Q0"
    assert not decoder.pending


def test_the_vendor_variant_with_the_aim_id_one_byte_later_decodes() -> None:
    reports = usbsim.honeywell_reports("https://mystore.omniwallet.cloud/c/OW7K2M9Q" * 3, aim="]z0", shifted=True)
    decoder = HidPosDecoder()
    scans = [s for s in map(decoder.feed, reports) if s]
    assert [s.text for s in scans] == ["https://mystore.omniwallet.cloud/c/OW7K2M9Q" * 3]
    assert scans[0].symbology == "aztec"


@pytest.mark.parametrize(("code_id", "aim", "expected"), [
    ("s", "]Q1", "qr"), ("z", "]z0", "aztec"), ("r", "]L2", "pdf417"), ("j", "]C0", "code128"),
    ("I", "]C1", "gs1-128"), ("d", "]E0", "ean13"), ("c", "]E0", "upca"), ("w", "]d1", "datamatrix"),
    ("\x00", "]E4", "ean8"), ("\x00", "]X0", "other"), ("\x00", "]W0", None),
])
def test_the_symbology_comes_from_the_honeywell_code_id_else_from_the_aim_id(
        code_id: str, aim: str, expected: str | None) -> None:
    scan = HidPosDecoder().feed(usbsim.honeywell_reports("4000123456789", aim=aim, code_id=code_id)[0])
    assert scan is not None and scan.symbology == expected


def test_latin1_payloads_from_wallet_passes_decode_as_latin1_and_utf8_as_utf8() -> None:
    decoder = HidPosDecoder()
    assert _decode_all(decoder, usbsim.honeywell_reports("José".encode("latin-1"))) == ["José"]
    assert _decode_all(decoder, usbsim.honeywell_reports("José".encode("utf-8"))) == ["José"]


def test_reports_other_than_scanned_data_are_ignored_and_impossible_lengths_are_errors() -> None:
    decoder = HidPosDecoder()
    assert decoder.feed(bytes([0x04, 0x01, 0x02])) is None
    bad = bytearray(usbsim.honeywell_reports("A")[0])
    bad[1] = 57
    with pytest.raises(ReportError, match="byte 1 .*57"):
        decoder.feed(bytes(bad))
    with pytest.raises(ReportError, match="65 bytes"):
        decoder.feed(bytes([2]) + bytes(64))
    with pytest.raises(ReportError, match="empty"):
        decoder.feed(b"")
    assert _decode_all(decoder, usbsim.honeywell_reports("OK")) == ["OK"]


def test_a_short_read_is_padded_like_a_full_report() -> None:
    report = usbsim.newland_reports("OW7K2M9Q")[0][:12]
    scan = HidPosDecoder("newland").feed(report)
    assert scan is not None and scan.text == "OW7K2M9Q"


def test_a_short_read_that_cuts_into_the_data_is_refused_not_padded_with_nuls() -> None:
    report = usbsim.newland_reports("OW7K2M9Q")[0][:6]  # data would run to byte 10
    decoder = HidPosDecoder("newland")
    with pytest.raises(ReportError, match="report of 6 bytes, but byte 1 says 8 data bytes"):
        decoder.feed(report)
    assert not decoder.pending
    assert _decode_all(decoder, usbsim.newland_reports("OW7K2M9Q")) == ["OW7K2M9Q"]


def test_a_code_that_never_ends_is_dropped_instead_of_growing_without_bound() -> None:
    decoder = HidPosDecoder()
    endless = usbsim.honeywell_reports("x" * 112)[0]  # continued flag set
    with pytest.raises(ReportError, match="never 0"):
        for _ in range(2000):
            decoder.feed(endless)
    assert not decoder.pending


def test_keyboard_repeated_characters_need_a_release_in_between_as_in_linux_usbkbd() -> None:
    decoder = KeyboardDecoder("us")
    zero, release, enter = bytes([0, 0, 0x27, 0, 0, 0, 0, 0]), bytes(8), bytes([0, 0, 0x28, 0, 0, 0, 0, 0])
    # a held key repeated in consecutive reports is one press; press-release-press is two
    scans = [s.text for r in (zero, zero, release, zero, release, enter, release) for s in decoder.feed(r, 0.0)]
    assert scans == ["00"]


def test_keyboard_two_keys_in_one_report_type_in_report_order_and_usages_below_4_are_not_keys() -> None:
    decoder = KeyboardDecoder("us")
    both = bytes([0, 0, 0x02, 0x04, 0x05, 0, 0, 0])  # POSTFail (2) is not a key
    scans = [s.text for r in (both, bytes(8), bytes([0, 0, 0x28, 0, 0, 0, 0, 0])) for s in decoder.feed(r, 0.0)]
    assert scans == ["ab"]


def test_keyboard_a_key_the_layout_cannot_type_leaves_a_visible_mark_instead_of_shortening_the_id() -> None:
    decoder = KeyboardDecoder("us")
    reports = [bytes([0, 0, 0x04, 0, 0, 0, 0, 0]), bytes(8), bytes([0, 0, 0x3A, 0, 0, 0, 0, 0]), bytes(8)]  # a, F1
    for report in reports:
        decoder.feed(report, 0.0)
    assert [s.text for s in decoder.flush()] == ["a\ufffd"]


def test_keyboard_silence_ends_a_scan_and_time_left_says_when() -> None:
    decoder = KeyboardDecoder("us", gap=0.1)
    decoder.feed(bytes([0, 0, 0x04, 0, 0, 0, 0, 0]), 10.0)
    assert decoder.time_left(10.04) == pytest.approx(0.06)
    assert decoder.expire(10.05) == []
    assert [s.text for s in decoder.expire(10.2)] == ["a"]
    assert decoder.time_left(10.3) is None
    with pytest.raises(ReportError, match="8 bytes"):
        decoder.feed(b"\x00\x00", 11.0)


def test_report_descriptors_are_told_apart_by_the_bar_code_scanner_usage_page() -> None:
    assert is_hid_pos(usbsim.HONEYWELL_POS_DESCRIPTOR)
    assert is_hid_pos(usbsim.NEWLAND_POS_DESCRIPTOR)
    assert not is_hid_pos(usbsim.BOOT_KEYBOARD_DESCRIPTOR)
    assert not is_hid_pos(b"\x06")  # truncated: no crash


def test_aim_ids_name_their_symbology() -> None:
    assert symbology_from_aim("]Q1") == "qr" and symbology_from_aim("]L2") == "pdf417"
    assert symbology_from_aim("Q1") is None and symbology_from_aim(None) is None


def test_hex_capture_lines_allow_spaces_colons_and_comments_and_errors_name_line_and_byte() -> None:
    lines = ["# captured with usbmon", "", "02 01 5d:51:31 41", "0x02 0x00  # trailing comment", "020141"]
    assert list(parse_hex_lines(lines)) == [(3, bytes.fromhex("02015d513141")), (4, b"\x02\x00"),
                                            (5, b"\x02\x01\x41")]
    with pytest.raises(ReportError, match=r"line 2: 'zz' \(byte 2\) is not a hex byte"):
        list(parse_hex_lines(["02 00", "02 01 zz 41"]))
    with pytest.raises(ReportError, match="line 1: '1' .*odd number"):
        list(parse_hex_lines(["02 01 1"]))
