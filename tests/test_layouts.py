"""Keyboard layouts as key positions: decoding keyboard-mode scanners and undoing layout damage."""

from __future__ import annotations

import re

import pytest

from posbridge import config, layouts
from posbridge.layouts import ALTGR, LEFT_SHIFT, RIGHT_SHIFT, char_for, keys_for, repair, retype
from tests.support.paths import shared_dir

S, G = LEFT_SHIFT, ALTGR

# The layout table of shared/reference/scanners.md (authoritative): char -> layout -> (usage, modifiers).
SCANNERS_MD_TABLE: dict[str, dict[str, tuple[int, int]]] = {
    "/": {"us": (0x38, 0), "es": (0x24, S), "fr": (0x37, S), "de": (0x24, S), "pt": (0x24, S), "br-abnt2": (0x87, 0)},
    ":": {"us": (0x33, S), "es": (0x37, S), "fr": (0x37, 0), "de": (0x37, S), "pt": (0x37, S), "br-abnt2": (0x38, S)},
    ".": {"us": (0x37, 0), "es": (0x37, 0), "fr": (0x36, S), "de": (0x37, 0), "pt": (0x37, 0), "br-abnt2": (0x37, 0)},
    "-": {"us": (0x2D, 0), "es": (0x38, 0), "fr": (0x23, 0), "de": (0x38, 0), "pt": (0x38, 0), "br-abnt2": (0x2D, 0)},
    "_": {"us": (0x2D, S), "es": (0x38, S), "fr": (0x25, 0), "de": (0x38, S), "pt": (0x38, S), "br-abnt2": (0x2D, S)},
    "?": {"us": (0x38, S), "es": (0x2D, S), "fr": (0x10, S), "de": (0x2D, S), "pt": (0x2D, S), "br-abnt2": (0x87, S)},
    "=": {"us": (0x2E, 0), "es": (0x27, S), "fr": (0x2E, 0), "de": (0x27, S), "pt": (0x27, S), "br-abnt2": (0x2E, 0)},
    "&": {"us": (0x24, S), "es": (0x23, S), "fr": (0x1E, 0), "de": (0x23, S), "pt": (0x23, S), "br-abnt2": (0x24, S)},
    "#": {"us": (0x20, S), "es": (0x20, G), "fr": (0x20, G), "de": (0x32, 0), "pt": (0x20, S), "br-abnt2": (0x20, S)},
    "@": {"us": (0x1F, S), "es": (0x1F, G), "fr": (0x27, G), "de": (0x14, G), "pt": (0x1F, G), "br-abnt2": (0x1F, S)},
}

URL = "https://mystore.omniwallet.cloud/card?id=OW7K2M9Q&v=2"


def test_layout_names_match_the_configuration_choices() -> None:
    assert layouts.LAYOUTS == config.LAYOUTS


@pytest.mark.parametrize("char", sorted(SCANNERS_MD_TABLE))
@pytest.mark.parametrize("layout", layouts.LAYOUTS)
def test_scanners_md_table_gives_each_characters_key_and_modifiers(layout: str, char: str) -> None:
    usage, modifiers = SCANNERS_MD_TABLE[char][layout]
    assert keys_for(layout, char) == (usage, modifiers)
    assert char_for(layout, usage, modifiers) == char


def test_table_in_this_test_is_the_one_in_scanners_md() -> None:
    doc = shared_dir() / "reference" / "scanners.md"
    found: dict[str, dict[str, tuple[int, int]]] = {}
    for line in doc.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 7 or not re.fullmatch(r"`.`", cells[0]):
            continue
        row = {}
        for layout, cell in zip(layouts.LAYOUTS, cells[1:]):
            mod, _, usage = cell.rpartition("+")
            row[layout] = (int(usage, 16), {"": 0, "S": S, "G": G}[mod])
        found[cells[0].strip("`")] = row
    assert found == SCANNERS_MD_TABLE


def test_fr_azerty_digits_need_shift_and_letters_move() -> None:
    for digit, usage in zip("1234567890", range(0x1E, 0x28)):
        assert keys_for("fr", digit) == (usage, S)
    assert [keys_for("fr", c) for c in "aqzwm,"] == [(0x14, 0), (0x04, 0), (0x1A, 0), (0x1D, 0), (0x33, 0), (0x10, 0)]
    assert char_for("fr", 0x1F, 0) == "é" and char_for("fr", 0x27, 0) == "à" and char_for("fr", 0x26, 0) == "ç"


def test_de_qwertz_swaps_y_and_z_and_types_its_own_letters() -> None:
    assert keys_for("de", "y") == (0x1D, 0) and keys_for("de", "z") == (0x1C, 0)
    assert keys_for("de", "Z") == (0x1C, S)
    expected = {"ß": (0x2D, 0), "ü": (0x2F, 0), "ö": (0x33, 0), "ä": (0x34, 0), "^": (0x35, 0),
                "#": (0x32, 0), "'": (0x32, S), "<": (0x64, 0), ">": (0x64, S), "|": (0x64, G), "€": (0x08, G)}
    assert {c: keys_for("de", c) for c in expected} == expected


def test_es_types_its_own_characters_on_the_us_punctuation_keys() -> None:
    expected = {"ñ": (0x33, 0), "Ñ": (0x33, S), "¡": (0x2E, 0), "¿": (0x2E, S), "ç": (0x31, 0),
                "º": (0x35, 0), "ª": (0x35, S), "'": (0x2D, 0), "+": (0x30, 0), "*": (0x30, S),
                "´": (0x34, 0), "¨": (0x34, S), "`": (0x2F, 0), "^": (0x2F, S), "\\": (0x35, G), "~": (0x21, G)}
    assert {c: keys_for("es", c) for c in expected} == expected


def test_pt_and_br_abnt2_keys_follow_xkeyboard_config() -> None:
    pt = {"ç": (0x33, 0), "º": (0x34, 0), "ª": (0x34, S), "~": (0x31, 0), "^": (0x31, S), "«": (0x2E, 0),
          "´": (0x30, 0), "\\": (0x35, 0), "|": (0x35, S)}
    br = {"ç": (0x33, 0), "~": (0x34, 0), "^": (0x34, S), "[": (0x30, 0), "]": (0x32, 0), "}": (0x32, S),
          "'": (0x35, 0), '"': (0x35, S), "\\": (0x64, 0), ";": (0x38, 0), "¨": (0x23, S)}
    assert {c: keys_for("pt", c) for c in pt} == pt
    assert {c: keys_for("br-abnt2", c) for c in br} == br


@pytest.mark.parametrize("layout", layouts.LAYOUTS)
def test_every_character_of_a_layout_round_trips_through_its_key(layout: str) -> None:
    typed = layouts.chars(layout)
    ascii_printable = {chr(c) for c in range(0x20, 0x7F)}
    assert ascii_printable <= typed, sorted(ascii_printable - typed)
    for char in typed:
        usage, modifiers = keys_for(layout, char)  # type: ignore[misc]
        assert char_for(layout, usage, modifiers) == char
        if modifiers & S:  # right Shift types the same as left Shift
            assert char_for(layout, usage, (modifiers & ~S) | RIGHT_SHIFT) == char


@pytest.mark.parametrize("layout", layouts.LAYOUTS)
def test_both_backslash_usages_decode_alike_keypad_types_digits_terminators_type_nothing(layout: str) -> None:
    for modifiers in (0, S, G):
        assert char_for(layout, 0x31, modifiers) == char_for(layout, 0x32, modifiers)
    assert [char_for(layout, usage, 0) for usage in range(0x59, 0x63)] == list("1234567890")
    for usage in (0x28, 0x58, 0x2B):
        assert layouts.is_terminator(usage) and char_for(layout, usage, 0) is None
    assert not layouts.is_terminator(0x04)
    assert char_for(layout, 0x2C, 0) == " "
    assert char_for(layout, 0x04, 0x01) is None  # Ctrl chords type no text
    assert char_for(layout, 0xE0, 0) is None  # a modifier key itself


@pytest.mark.parametrize(
    ("host", "damaged"),
    [
        ("es", "httpsÑ--mystore.omniwallet.cloud-card_id¡OW7K2M9Q/v¡2"),
        ("fr", "httpsM!!,ystore:o,nizqllet:cloud!cqrd§id=OZèKé?çA7v=é"),
        ("de", "httpsÖ--mzstore.omniwallet.cloud-card_id´OW7K2M9Q/v´2"),
        ("pt", "httpsÇ--mystore.omniwallet.cloud-card_id«OW7K2M9Q/v«2"),
        ("br-abnt2", "httpsÇ;;mystore.omniwallet.cloud;card:id=OW7K2M9Q&v=2"),
    ],
)
def test_url_typed_by_a_us_scanner_into_a_foreign_till_is_repaired(host: str, damaged: str) -> None:
    assert retype(URL, "us", host) == (damaged, [])
    assert repair(damaged, scanner_layout="us", host_layout=host) == URL


def test_issue_example_us_scanner_on_spanish_till() -> None:
    assert repair("httpsÑ--mystore.omniwallet.cloud-c-OW7K2M9Q", scanner_layout="us", host_layout="es") \
        == "https://mystore.omniwallet.cloud/c/OW7K2M9Q"


# The one key no other layout has: BR-ABNT2 types / and ? on International1 (0x87, KEY_RO), which US, ES, FR, DE
# and PT hosts map to no character. Every other pair carries every character of a card URL.
LOST_ON_OTHER_HOSTS = {"br-abnt2": {"/", "?"}}


@pytest.mark.parametrize("scanner", layouts.LAYOUTS)
@pytest.mark.parametrize("host", layouts.LAYOUTS)
def test_ascii_urls_survive_every_layout_pair_except_the_abnt2_key_other_hosts_lack(scanner: str, host: str) -> None:
    shown, lost = retype(URL, scanner, host)
    expected_lost = LOST_ON_OTHER_HOSTS.get(scanner, set()) if host != scanner else set()
    assert {URL[i] for i in lost} == expected_lost
    if not expected_lost:
        assert repair(shown, scanner, host) == URL
    else:  # what came through is repaired, and only the lost characters are missing
        assert keys_for(scanner, "/") == (0x87, 0) and char_for(host, 0x87, 0) is None
        assert repair(shown, scanner, host) == "".join(c for c in URL if c not in expected_lost)


def test_text_that_cannot_be_mapped_back_is_not_repaired() -> None:
    assert repair("OW7K2M9Q€", "us", "es") is None  # a US scanner has no key that shows € on ES
    assert repair("ñandú", "us", "fr") is None  # no US key shows ñ on a French till
    assert repair("same", "de", "de") == "same"


def test_retype_reports_characters_that_did_not_come_through() -> None:
    assert retype("aé#", "us", "es") == ("a·", [1])  # a US scanner cannot type é; its Shift+3 shows ·
    assert retype("a@b", "es", "us") == ("ab", [1])  # AltGr types nothing on a US host


def test_unknown_layout_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown keyboard layout 'dvorak'"):
        char_for("dvorak", 0x04, 0)
    with pytest.raises(ValueError):
        repair("x", "us", "xx")
