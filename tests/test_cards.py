"""Card text -> member id: what every scanner and the HTTP member route rely on."""

from __future__ import annotations

import codecs
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from posbridge import layouts
from posbridge.cards import CardRead, parse_card, unescape
from posbridge.config import CardSettings
from posbridge.errors import CardRejected
from tests.support.paths import shared_dir


class Row(NamedTuple):
    line: int
    text: str  # with the TSV's backslash escapes already interpreted
    expected: str  # a member id, or "(reject: reason)"
    why: str


def tsv_rows() -> list[Row]:
    path = shared_dir() / "fixtures" / "cards" / "card-payloads.tsv"
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if number == 1 or not line:  # header
            continue
        text, expected, why = line.split("\t")
        rows.append(Row(number, tsv_unescape(text), expected, why))
    return rows


def tsv_unescape(text: str) -> str:
    """The TSV header's escapes (\\r \\n \\t \\xNN stand for those bytes) read by Python's own escape codec,
    not by the product's ``unescape`` under test; the fixture is UTF-8 text around ASCII escapes."""
    assert re.fullmatch(r"(?:[^\\]|\\[rnt]|\\x[0-7][0-9a-fA-F])*", text), f"unexpected escape in {text!r}"
    return codecs.escape_decode(text.encode("utf-8"))[0].decode("utf-8")


def test_the_fixture_rows_hold_the_bytes_devices_send() -> None:
    texts = {row.why: row.text for row in ROWS}
    assert texts["serial scanner with CR LF suffix and stray spaces"] == "  OW7K2M9Q\r\n"
    assert texts["zero padding left from a fixed-size HID report"] == "OW7K2M9Q\x00\x00\x00"
    assert any(row.text == "" for row in ROWS)  # the empty scan


ROWS = tsv_rows()
REJECT = re.compile(r"\(reject: (.*)\)")


def assert_as_table_says(row: Row, result: dict[str, object]) -> None:
    reject = REJECT.fullmatch(row.expected)
    if reject:
        assert result["member_id"] is None, result
        assert reject.group(1) in str(result["error"]), result
    else:
        assert result["member_id"] == row.expected and result["error"] is None, result


def posbridge_command() -> list[str]:
    script = Path(sys.executable).parent / "posbridge"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from posbridge.cli import main; main()"]


@pytest.mark.parametrize("row", ROWS, ids=[f"line{r.line}-{r.why[:40]}" for r in ROWS])
def test_every_card_payloads_row_parses_as_the_table_says(row: Row) -> None:
    assert_as_table_says(row, parse_card(row.text).as_dict())


def test_every_card_payloads_row_passes_through_the_cli_as_the_table_says(tmp_path: Path) -> None:
    empty_config = tmp_path / "posbridge.toml"
    empty_config.write_text("")
    raw = [line.split("\t")[0] for line in
           (shared_dir() / "fixtures/cards/card-payloads.tsv").read_text(encoding="utf-8").split("\n")[1:] if line]
    done = subprocess.run([*posbridge_command(), "cards", "parse", "--escapes", "--config", str(empty_config),
                           "--", *raw], capture_output=True, timeout=60)
    lines = done.stdout.decode("utf-8").splitlines()
    assert len(lines) == len(ROWS), done.stderr.decode()
    for row, line in zip(ROWS, lines):
        result = json.loads(line)
        assert result["input"] == row.text
        assert_as_table_says(row, result)
    assert done.returncode == (1 if any(REJECT.fullmatch(r.expected) for r in ROWS) else 0)


def test_device_leftovers_are_stripped_and_each_step_is_recorded() -> None:
    read = parse_card("\x02]Q1OW7K2M9Q\x03\r\n\x00\x00")
    assert read.member_id == "OW7K2M9Q" and read.symbology == "qr"
    assert read.repairs == ["stripped STX/ETX framing", "stripped NUL padding", "stripped CR/LF",
                            "removed AIM prefix ]Q1 (QR)"]
    assert parse_card("\tOW7K2M9Q  ").repairs == ["stripped surrounding whitespace"]
    assert parse_card("OW7K2M9Q").repairs == []


@pytest.mark.parametrize(
    ("prefix", "symbology"),
    [("]Q1", "qr"), ("]Q0", "qr"), ("]z0", "aztec"), ("]L2", "pdf417"),
     ("]L0", "pdf417"), ("]d1", "datamatrix"), ("]C0", "code128"),
     ("]E0", "ean13"), ("]E3", "ean13"), ("]E4", "ean8"), ("]A0", "code39"), ("]I0", "itf"), ("]I1", "itf"),
     ("]F0", "codabar"), ("]G0", "code93"), ("]U2", "maxicode"), ("]X0", "other")],
)
def test_aim_prefix_is_removed_and_recorded_as_the_symbology(prefix: str, symbology: str) -> None:
    read = parse_card(f"{prefix}4000123456789\r\n")
    assert (read.member_id, read.symbology) == ("4000123456789", symbology)
    assert f"removed AIM prefix {prefix}" in read.repairs[-1]


def test_symbology_reported_by_the_device_wins_over_the_aim_prefix() -> None:
    assert parse_card("]Q1OW7K2M9Q", symbology="aztec").symbology == "aztec"
    assert parse_card("OW7K2M9Q", symbology="pdf417").symbology == "pdf417"


def test_only_an_aim_prefix_is_empty() -> None:
    read = parse_card("]Q1\r\n")
    assert read.member_id is None and read.error is not None and read.error.startswith("empty")
    assert read.symbology == "qr"


def test_card_url_query_parameter_decides_over_the_path() -> None:
    assert parse_card("https://s.example/card?v=2&member=AB12CD").member_id == "AB12CD"
    bad = parse_card("https://s.example/card?id=../../etc/passwd")  # never falls back to "card"
    assert bad.member_id is None and "query parameter 'id'" in str(bad.error)
    assert parse_card("HTTPS://S.EXAMPLE/C/OW7K2M9Q").member_id == "OW7K2M9Q"  # QR alphanumeric mode
    assert parse_card("https://s.example/c/OW7K2M9Q/").member_id == "OW7K2M9Q"
    assert parse_card("https://s.example/c/..%2F..%2Fetc%2Fpasswd").member_id is None
    empty = parse_card("https://s.example/")
    assert empty.member_id is None and str(empty.error).startswith("does not look like a card")
    assert parse_card("https://[::1/c/X").error is not None  # malformed, still no exception


def test_configured_patterns_are_tried_in_order_before_the_generic_rules() -> None:
    settings = CardSettings(patterns=[r"^LOY:(?P<member>\d{6})$", r"(?P<member>[A-Z]{2}\d{4})"])
    first = parse_card("LOY:123456", settings)
    assert first.member_id == "123456" and first.repairs == ["member id from pattern 1"]
    assert parse_card("name=AB1234;x", settings).member_id == "AB1234"
    assert parse_card("https://s.example/c/ZZ-AB1234", settings).member_id == "AB1234"  # not the URL rule's
    assert parse_card("OW7K2M9Q", settings).member_id == "OW7K2M9Q"  # generic rules still apply


def test_text_matching_no_pattern_is_rejected_naming_the_patterns() -> None:
    settings = CardSettings(patterns=[r"^LOY:(?P<member>\d+)$"])
    read = parse_card("hello world", settings)
    assert read.member_id is None and str(read.error).startswith("not matching any pattern (1 configured)")
    short = parse_card("LOY:12", settings)
    assert str(short.error).startswith("pattern 1 matched, but its member id: too short (2 characters")


def test_length_and_alphabet_come_from_the_settings() -> None:
    digits = CardSettings(alphabet="0-9", min_length=8, max_length=13)
    assert parse_card("4000123456789", digits).member_id == "4000123456789"
    assert str(parse_card("OW7K2M9Q", digits).error).startswith("does not look like a card: character 'O'")
    assert parse_card("1234567", digits).error == "too short (7 characters, at least 8)"
    assert parse_card("12345678901234", digits).error == "too long (14 characters, at most 13)"


def test_layout_damaged_url_repaired_when_exactly_one_pair_fits() -> None:
    url = "https://mystore.omniwallet.cloud/c/OW7K2M9Q"
    for host in ("es", "fr", "de", "pt", "br-abnt2"):
        damaged, lost = layouts.retype(url, "us", host)
        read = parse_card(damaged)
        assert not lost and read.member_id == "OW7K2M9Q", (host, damaged, read)
        assert f"keyboard layout us->{host} repaired" in read.repairs


def test_damaged_aim_prefix_is_repaired_with_the_rest() -> None:
    read = parse_card("+Q1httpsÑ--mystore.omniwallet.cloud-c-OW7K2M9Q\r\n")  # ]Q1 typed by US on ES
    assert (read.member_id, read.symbology) == ("OW7K2M9Q", "qr")
    assert read.repairs[:3] == ["stripped CR/LF", "keyboard layout us->es repaired", "removed AIM prefix ]Q1 (QR)"]


def test_layout_repair_is_refused_when_two_pairs_give_different_ids() -> None:
    fits = {(s, h): parse_card(fixed).member_id for s in layouts.LAYOUTS for h in layouts.LAYOUTS
            if s != h and (fixed := layouts.repair("AB;CD", s, h)) is not None}
    assert len({member for member in fits.values() if member}) > 1  # e.g. fr->us "QBmCD", es->br "AB-CD"
    read = parse_card("AB;CD")
    assert read.member_id is None and "keyboard-layout repair is ambiguous" in str(read.error)


def test_configured_layout_pair_is_the_only_pair_tried() -> None:
    damaged = "httpsÑ--mystore.omniwallet.cloud-c-OW7K2M9Q"
    right = CardSettings(scanner_layout="us", host_layout="es")
    wrong = CardSettings(scanner_layout="de", host_layout="es")
    assert parse_card(damaged, right).member_id == "OW7K2M9Q"
    assert parse_card(damaged, wrong).member_id is None
    assert parse_card("OW7K2M9Y", CardSettings(scanner_layout="de", host_layout="us")).member_id == "OW7K2M9Y"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        (" \t\r\n ", "empty"),
        ("\x00\x00\x00\x00", "empty"),
        ("\x02\x03", "empty"),
        ("A" * 300, "too long (300 characters, at most 64)"),
        ("A" * 3000, "too long (3000 characters, at most 2048)"),
        ("OW7\x07K2M9Q", "control character U+0007 at position 3"),
        ("OW7K\x002M9Q", "control character U+0000 at position 4"),
        ("  OW7K\x1b[2J", "control character U+001B at position 6"),
        ("OW7K\tM9Q", "control character U+0009 at position 4"),
        ("OW7K\x7f", "control character U+007F at position 4"),
        ("OW7K\ud800M9Q", "invalid text: lone surrogate U+D800 at position 4"),
        ("\udcffOW7K", "invalid text: lone surrogate U+DCFF at position 0"),
        ("../../etc/passwd", "does not look like a card"),
        ("OW7K2M9Q; DROP TABLE members", "does not look like a card"),
        ("ÖW7K2M9Q", "does not look like a card"),
        ("OW7K\u200b2M9Q", "does not look like a card"),
        ("AB", "too short (2 characters, at least 4)"),
    ],
)
def test_garbage_is_rejected_with_a_reason(text: str, reason: str) -> None:
    read = parse_card(text)
    assert read.member_id is None and read.error is not None
    assert read.error.startswith(reason), read.error


def test_huge_input_is_rejected_before_parsing_and_quickly() -> None:
    started = time.monotonic()
    read = parse_card("https://x/" + "\u00d1-" * 500_000)
    assert read.error == "too long (1000010 characters, at most 2048)"
    assert time.monotonic() - started < 0.5
    assert len(read.as_dict()["input"]) < 400  # not echoed back whole


def test_non_text_is_rejected_not_raised() -> None:
    for value in (b"OW7K2M9Q", None, 12345):
        read = parse_card(value)  # type: ignore[arg-type]
        assert read.member_id is None and str(read.error).startswith("invalid text")


def test_as_dict_has_the_documented_keys_and_is_always_utf8_json() -> None:
    read = parse_card("\ud800OW7K")
    shown = read.as_dict()
    assert list(shown) == ["input", "member_id", "symbology", "gs1_ai", "repairs", "error"]
    assert shown["input"] == "\\ud800OW7K"
    json.dumps(shown, ensure_ascii=False).encode("utf-8")


def test_require_returns_the_id_or_raises_card_rejected_with_the_reason() -> None:
    assert parse_card("OW7K2M9Q").require() == "OW7K2M9Q"
    with pytest.raises(CardRejected, match="^empty$") as caught:
        parse_card("  ").require()
    assert isinstance(caught.value, ValueError) and caught.value.read.error == "empty"


def test_unescape_reads_the_tsv_escapes_and_keeps_unknown_ones() -> None:
    assert unescape(r"a\r\n\t\x00\x1d\\b\u00d1\q") == "a\r\n\t\x00\x1d\\b\u00d1\\q"


FUZZ_POOL = [
    *"AZaz09_-./:?&=%#@ +;,'\"<>|[]{}~^`!$()*", "\x00", "\x02", "\x03", "\r", "\n", "\t", "\x07", "\x1d",
    "\x7f", "\x85", "\u00a0", "\u200b", "\ufeff", "\u2028", "Ñ", "ñ", "¡", "¿", "ç", "é", "€", "ß", "ö", "·", "´",
    "\ud800", "\udfff", "\udcff", "\U0001f600", "https://", "HTTP://", "s.example/c/", "?id=", "&member=",
    "]Q1", "]C0", "]z0", "]", "%2F", "%00", "..", "OW7K2M9Q", "4000123456789", "httpsÑ--", "-c-",
]


@pytest.mark.parametrize(
    "settings",
    [CardSettings(),
     CardSettings(patterns=[r"^LOY(?P<member>\d+)", r"(?P<member>[A-Z]{2}\w*)?"], min_length=1, max_length=8),
     CardSettings(scanner_layout="us", host_layout="es", alphabet="0-9A-Z")],
    ids=["defaults", "patterns", "layout-pair"],
)
def test_never_raises_and_member_ids_only_ever_hold_alphabet_characters(settings: CardSettings) -> None:
    rng = random.Random(20240915)
    allowed = re.compile(f"[{settings.alphabet}]{{{settings.min_length},{settings.max_length}}}")
    inputs = ["".join(rng.choice(FUZZ_POOL) for _ in range(rng.randint(0, 24))) for _ in range(1500)]
    inputs += [layouts.retype(text, rng.choice(layouts.LAYOUTS), rng.choice(layouts.LAYOUTS))[0]
               for text in inputs[:300]]
    inputs += ["".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 40))) for _ in range(300)]
    for text in inputs:
        read = parse_card(text, settings)
        assert isinstance(read, CardRead)
        assert (read.member_id is None) != (read.error is None), (text, read)
        assert not str(read.error).startswith("internal error"), (text, read)
        if read.member_id is not None:
            assert allowed.fullmatch(read.member_id), (text, read)
        json.dumps(read.as_dict(), ensure_ascii=False).encode("utf-8")
