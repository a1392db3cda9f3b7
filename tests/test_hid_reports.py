"""Pure decoding of HID POS and boot-keyboard reports, report descriptors and hex capture lines."""

from __future__ import annotations

import pytest

from posbridge import layouts
from posbridge.errors import DescriptorError, ReportError
from posbridge.scanners.hiddescriptor import is_hid_pos, parse, parse_hex, pos_layout
from posbridge.scanners.hidreports import HidPosDecoder, parse_hex_lines, symbology_from_aim
from posbridge.scanners.keyboard import KeyboardDecoder
from tests.support import usbsim

CTRL, SHIFT = layouts.LEFT_CTRL, layouts.LEFT_SHIFT
ENTER = [bytes([0, 0, 0x28, 0, 0, 0, 0, 0]), bytes(8)]


def _decode_all(decoder: HidPosDecoder, reports: list[bytes]) -> list[str]:
    return [scan.text for report in reports for scan in decoder.feed(report)]


def _one(decoder: HidPosDecoder, report: bytes):  # type: ignore[no-untyped-def]
    scans = decoder.feed(report)
    assert len(scans) <= 1
    return scans[0] if scans else None


def _typed(decoder: KeyboardDecoder, reports: list[bytes], now: float = 0.0) -> list[str]:
    return [scan.text for report in reports for scan in decoder.feed(report, now)]


def test_the_access_is_example_of_a_60_byte_qr_in_two_reports_decodes() -> None:
    payload = bytes(range(0x41, 0x41 + 26)) * 2 + b"12345678"
    assert len(payload) == 60
    first = bytes([0x02, 0x38]) + b"]Q0" + payload[:56] + b"s\x00\x01"
    second = bytes([0x02, 0x04]) + b"]Q0" + payload[56:] + bytes(52) + b"s\x00\x00"
    decoder = HidPosDecoder()
    assert decoder.feed(first) == [] and decoder.pending
    scan = _one(decoder, second)
    assert scan is not None and scan.data == payload and scan.symbology == "qr" and scan.aim == "]Q0"
    assert not decoder.pending


def test_the_vendor_variant_with_the_aim_id_one_byte_later_decodes() -> None:
    reports = usbsim.honeywell_reports("https://mystore.omniwallet.cloud/c/OW7K2M9Q" * 3, aim="]z0", shifted=True)
    decoder = HidPosDecoder()
    scans = [s for r in reports for s in decoder.feed(r)]
    assert [s.text for s in scans] == ["https://mystore.omniwallet.cloud/c/OW7K2M9Q" * 3]
    assert scans[0].symbology == "aztec"


@pytest.mark.parametrize(("code_id", "aim", "expected"), [
    ("s", "]Q1", "qr"), ("z", "]z0", "aztec"), ("r", "]L2", "pdf417"), ("j", "]C0", "code128"),
    ("I", "]C1", "gs1-128"), ("d", "]E0", "ean13"), ("c", "]E0", "upca"), ("w", "]d1", "datamatrix"),
    ("\x00", "]E4", "ean8"), ("\x00", "]X0", "other"), ("\x00", "]W0", None),
])
def test_the_symbology_comes_from_the_honeywell_code_id_else_from_the_aim_id(
        code_id: str, aim: str, expected: str | None) -> None:
    scan = _one(HidPosDecoder(), usbsim.honeywell_reports("4000123456789", aim=aim, code_id=code_id)[0])
    assert scan is not None and scan.symbology == expected


def test_latin1_payloads_from_wallet_passes_decode_as_latin1_and_utf8_as_utf8() -> None:
    decoder = HidPosDecoder()
    assert _decode_all(decoder, usbsim.honeywell_reports("José".encode("latin-1"))) == ["José"]
    assert _decode_all(decoder, usbsim.honeywell_reports("José".encode("utf-8"))) == ["José"]


def test_reports_other_than_scanned_data_are_ignored_and_impossible_lengths_are_errors() -> None:
    decoder = HidPosDecoder()
    assert decoder.feed(bytes([0x04, 0x01, 0x02])) == []
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
    scan = _one(HidPosDecoder(variant="newland"), report)
    assert scan is not None and scan.text == "OW7K2M9Q"


def test_a_short_read_that_cuts_into_the_data_is_refused_not_padded_with_nuls() -> None:
    report = usbsim.newland_reports("OW7K2M9Q")[0][:6]  # data would run to byte 10
    decoder = HidPosDecoder(variant="newland")
    with pytest.raises(ReportError, match="report of 6 bytes, but byte 1 says 8 data bytes"):
        decoder.feed(report)
    assert not decoder.pending
    assert _decode_all(decoder, usbsim.newland_reports("OW7K2M9Q")) == ["OW7K2M9Q"]


def test_a_code_that_never_ends_is_dropped_instead_of_growing_without_bound() -> None:
    decoder = HidPosDecoder()
    endless = usbsim.honeywell_reports("x" * 112)[0]  # continued flag set
    with pytest.raises(ReportError, match="continued flag was never clear"):
        for _ in range(2000):
            decoder.feed(endless)
    assert not decoder.pending


def test_keyboard_repeated_characters_need_a_release_in_between_as_in_linux_usbkbd() -> None:
    decoder = KeyboardDecoder("us")
    zero, release, enter = bytes([0, 0, 0x27, 0, 0, 0, 0, 0]), bytes(8), bytes([0, 0, 0x28, 0, 0, 0, 0, 0])
    # a held key repeated in consecutive reports is one press; press-release-press is two
    assert _typed(decoder, [zero, zero, release, zero, release, enter, release]) == ["00"]


def test_keyboard_two_keys_in_one_report_type_in_report_order_and_usages_below_4_are_not_keys() -> None:
    decoder = KeyboardDecoder("us")
    both = bytes([0, 0, 0x02, 0x04, 0x05, 0, 0, 0])  # POSTFail (2) is not a key
    assert _typed(decoder, [both, bytes(8), bytes([0, 0, 0x28, 0, 0, 0, 0, 0])]) == ["ab"]


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
    assert list(parse_hex_lines(lines)) == [(3, None, bytes.fromhex("02015d513141")), (4, None, b"\x02\x00"),
                                            (5, None, b"\x02\x01\x41")]
    assert list(parse_hex_lines(["0.1250 02 01 41", "12.5 0x02:0x00"])) == [(1, 0.125, b"\x02\x01\x41"),
                                                                          (2, 12.5, b"\x02\x00")]
    with pytest.raises(ReportError, match=r"line 2: 'zz' \(byte 2\) is not a hex byte"):
        list(parse_hex_lines(["02 00", "02 01 zz 41"]))
    with pytest.raises(ReportError, match="line 1: '1' .*odd number"):
        list(parse_hex_lines(["02 01 1"]))


# HID POS by report descriptor -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("descriptor", "expected"), [
    (usbsim.HONEYWELL_POS_DESCRIPTOR, dict(size=64, count_at=1, aim_at=2, data_at=5, data_max=56, continued=(63, 1),
                                           code_id_at=61)),
    (usbsim.ZEBRA_POS_DESCRIPTOR, dict(size=64, count_at=1, aim_at=3, data_at=6, data_max=55, continued=(63, 2),
                                       code_id_at=None)),
    (usbsim.NEWLAND_POS_DESCRIPTOR, dict(size=64, count_at=1, aim_at=None, data_at=2, data_max=56,
                                         continued=(63, 1), code_id_at=None)),
], ids=["honeywell", "zebra", "newland"])
def test_the_fields_of_a_scanned_data_report_are_found_by_their_hid_pos_usages(descriptor: bytes, expected: dict) -> None:
    layout = pos_layout(descriptor)
    assert layout.report_id == 2
    assert {key: getattr(layout, key) for key in expected} == expected


def test_a_honeywell_report_without_an_aim_id_decodes_whole_with_its_descriptor() -> None:
    reports = usbsim.honeywell_reports("OW7K2M9Q", aim="\x00\x00\x00", code_id="\x00")
    decoder = HidPosDecoder.from_descriptor(usbsim.HONEYWELL_POS_DESCRIPTOR)
    assert _decode_all(decoder, reports) == ["OW7K2M9Q"]


def test_without_a_descriptor_a_report_the_guess_cannot_tell_apart_is_refused_never_cut_short() -> None:
    reports = usbsim.honeywell_reports("OW7K2M9Q", aim="\x00\x00\x00", code_id="\x00")
    decoder = HidPosDecoder()
    with pytest.raises(ReportError, match="byte 1 says 8 data bytes, but byte 2 is 0x00.*--descriptor"):
        decoder.feed(reports[0])
    assert not decoder.pending


def test_the_zebra_layout_is_read_from_its_descriptor_with_the_continued_flag_in_bit_1() -> None:
    url = "https://mystore.omniwallet.cloud/card?id=OW7K2M9Q&v=2" * 3
    decoder = HidPosDecoder.from_descriptor(usbsim.ZEBRA_POS_DESCRIPTOR)
    scans = [s for r in usbsim.zebra_reports(url, aim="]z0") for s in decoder.feed(r)]
    assert [(s.text, s.aim, s.symbology) for s in scans] == [(url, "]z0", "aztec")]


@pytest.mark.parametrize("length", [12, 63, 65])
def test_a_report_that_does_not_fit_its_descriptor_is_refused_with_the_byte_counts(length: int) -> None:
    report = usbsim.honeywell_reports("OW7K2M9Q")[0].ljust(65, b"\0")[:length]
    decoder = HidPosDecoder.from_descriptor(usbsim.HONEYWELL_POS_DESCRIPTOR)
    with pytest.raises(ReportError, match=rf"report 2 of {length} bytes does not fit .* 64 bytes"):
        decoder.feed(report)


def test_a_byte_count_larger_than_the_descriptors_data_field_is_refused() -> None:
    report = bytearray(usbsim.zebra_reports("OW7K2M9Q")[0])
    report[1] = 56  # one more than the 55 bytes the Zebra-style descriptor declares
    with pytest.raises(ReportError, match="byte 1 .* 56; at most 55 data bytes"):
        HidPosDecoder.from_descriptor(usbsim.ZEBRA_POS_DESCRIPTOR).feed(bytes(report))


def test_reports_with_another_report_id_are_not_data() -> None:
    decoder = HidPosDecoder.from_descriptor(usbsim.HONEYWELL_POS_DESCRIPTOR)
    assert decoder.feed(bytes([0x04]) + bytes(7)) == []


def test_descriptors_without_decoded_data_or_cut_short_are_refused_naming_why() -> None:
    with pytest.raises(DescriptorError, match="no Decoded Data input"):
        pos_layout(usbsim.BOOT_KEYBOARD_DESCRIPTOR)
    with pytest.raises(DescriptorError, match="item 0x26 at byte 18 needs 2 data bytes, only 1 are left"):
        parse(usbsim.HONEYWELL_POS_DESCRIPTOR[:20])  # cut inside Logical Maximum (26 ff 00)
    with pytest.raises(DescriptorError, match="'zz' is not hex"):
        parse_hex("05 8c zz")
    assert parse_hex("# Honeywell\n05 8c:09 02\n0xa1 01") == bytes.fromhex("058c0902a101")


def test_an_unfinished_code_ends_after_the_idle_gap_and_is_not_glued_to_the_next_one() -> None:
    decoder = HidPosDecoder.from_descriptor(usbsim.ZEBRA_POS_DESCRIPTOR, gap=0.1)
    first = "X" * 55  # exactly one report's data: the firmware never sends the closing report
    assert decoder.feed(usbsim.zebra_reports(first, last_flag=False)[0], 10.0) == []
    assert decoder.time_left(10.04) == pytest.approx(0.06)
    assert decoder.expire(10.05) == []
    ended = decoder.expire(10.11)
    assert [(s.text, s.unfinished) for s in ended] == [(first, True)]
    assert [s.text for s in decoder.feed(usbsim.zebra_reports("OW7K2M9Q")[0], 12.0)] == ["OW7K2M9Q"]


def test_a_new_code_after_the_gap_ends_the_unfinished_one_in_the_same_feed() -> None:
    decoder = HidPosDecoder.from_descriptor(usbsim.ZEBRA_POS_DESCRIPTOR, gap=0.1)
    decoder.feed(usbsim.zebra_reports("Y" * 55, last_flag=False)[0], 1.0)
    scans = decoder.feed(usbsim.zebra_reports("OW7K2M9Q")[0], 1.5)
    assert [(s.text, s.unfinished) for s in scans] == [("Y" * 55, True), ("OW7K2M9Q", False)]


def test_an_empty_or_padding_only_code_is_no_scan() -> None:
    decoder = HidPosDecoder.from_descriptor(usbsim.HONEYWELL_POS_DESCRIPTOR)
    assert decoder.feed(usbsim.honeywell_reports(b"")[0]) == []
    assert decoder.feed(usbsim.honeywell_reports(b"\x00\x00 \r\n")[0]) == []


# keyboard mode: terminators and Alt codes --------------------------------------------------------------------------

@pytest.mark.parametrize("terminator", [
    usbsim.chord(CTRL, 0x0D), usbsim.chord(CTRL | SHIFT, 0x0D), usbsim.chord(CTRL, 0x10),
    usbsim.chord(layouts.RIGHT_CTRL | layouts.RIGHT_SHIFT, 0x0D)],
    ids=["ctrl-j", "ctrl-shift-j", "ctrl-m", "right-ctrl-shift-j"])
def test_a_control_chord_typing_cr_or_lf_ends_the_scan_and_alone_is_nothing(terminator: list[bytes]) -> None:
    decoder = KeyboardDecoder("us", gap=float("inf"))
    reports = usbsim.keyboard_reports("OW7K2M9Q", "us", suffix=None) + terminator
    assert _typed(decoder, reports) == ["OW7K2M9Q"]
    assert _typed(decoder, terminator + ENTER + terminator) == []
    assert decoder.flush() == [] and not decoder.pending


def test_reports_of_modifiers_or_whitespace_alone_after_a_scan_are_no_second_scan() -> None:
    decoder = KeyboardDecoder("us", gap=0.1)
    reports = usbsim.keyboard_reports("OW7K2M9Q", "us")
    shift_only, space = bytes([SHIFT, 0, 0, 0, 0, 0, 0, 0]), bytes([0, 0, 0x2C, 0, 0, 0, 0, 0])
    assert _typed(decoder, reports, now=1.0) == ["OW7K2M9Q"]
    assert _typed(decoder, [shift_only, bytes(8), space, bytes(8), space, bytes(8)], now=1.01) == []
    assert decoder.expire(2.0) == [] and decoder.flush() == []


def test_ctrl_bracket_between_characters_is_still_the_gs1_separator() -> None:
    gs = usbsim.chord(CTRL, 0x30)
    reports = usbsim.keyboard_reports("10AB", "us", suffix=None) + gs + usbsim.keyboard_reports("8018", "us")
    assert _typed(KeyboardDecoder("us", gap=float("inf")), reports) == ["10AB\x1d8018"]


@pytest.mark.parametrize("layout", layouts.LAYOUTS)
def test_an_alt_code_capture_of_sip_4_1_reads_the_same_whatever_the_layout(layout: str) -> None:
    reports = usbsim.alt_code_reports("SIP-4-1")
    assert _typed(KeyboardDecoder(layout, gap=float("inf")), reports) == ["SIP-4-1"]


@pytest.mark.parametrize(("digits", "page", "char"), [
    ("0209", 850, "Ñ"), ("165", 850, "Ñ"), ("165", 437, "Ñ"), ("0128", 437, "€"), ("213", 850, "ı"),
    ("213", 437, "╒"), ("65", 850, "A"), ("321", 850, "A"), ("029", 850, "\x1d")])
def test_alt_codes_use_windows_1252_with_a_leading_zero_and_the_oem_code_page_without(
        digits: str, page: int, char: str) -> None:
    alt = layouts.LEFT_ALT
    reports = [bytes([alt, 0, 0, 0, 0, 0, 0, 0])]
    for digit in digits:
        reports += [bytes([alt, 0, layouts.KEYPAD_DIGITS[digit], 0, 0, 0, 0, 0]), bytes([alt]) + bytes(7)]
    reports += [bytes(8)] + usbsim.keyboard_reports("X", "us")
    assert _typed(KeyboardDecoder("us", gap=float("inf"), oem_code_page=page), reports) == [char + "X"]


def test_alt_code_13_or_10_ends_the_scan_like_enter() -> None:
    reports = usbsim.alt_code_reports("OW7K2M9Q", suffix=None) + usbsim.alt_code_reports("\r", suffix=None)
    assert _typed(KeyboardDecoder("fr", gap=float("inf")), reports) == ["OW7K2M9Q"]


def test_every_character_an_alt_code_can_type_round_trips_through_the_layouts_table() -> None:
    for page in layouts.OEM_CODE_PAGES:
        for value in range(0x20, 0x100):
            ansi = bytes([value]).decode("cp1252", errors="ignore")  # five bytes are undefined in Windows-1252
            for char in {ansi, bytes([value]).decode(f"cp{page}")} - {""}:
                digits = layouts.alt_code_digits(char, page)
                assert digits is not None and layouts.alt_code_char(digits, page) == char, (page, char)
