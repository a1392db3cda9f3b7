"""`posbridge cards parse`: the technician's view of the card parser, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def posbridge_command() -> list[str]:
    script = Path(sys.executable).parent / "posbridge"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from posbridge.cli import main; main()"]


def run_cli(*args: str | bytes, config: Path | None, stdin: bytes = b"") -> tuple[int, list[dict[str, Any]], str]:
    """(exit status, one decoded JSON object per stdout line, stderr). No system config is ever read."""
    env = {key: value for key, value in os.environ.items() if key != "POSBRIDGE_CONFIG"}
    command: list[str | bytes] = [*posbridge_command(), "cards", "parse"]
    if config is not None:
        command += ["--config", str(config)]
    done = subprocess.run([*command, *args], input=stdin, capture_output=True, timeout=60, env=env)
    lines = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    return done.returncode, lines, done.stderr.decode("utf-8", "replace")


@pytest.fixture()
def defaults(tmp_path: Path) -> Path:
    path = tmp_path / "posbridge.toml"
    path.write_text("# defaults only\n")
    return path


def test_prints_one_json_object_per_input_and_exits_0_when_all_parse(defaults: Path) -> None:
    status, lines, _ = run_cli("]Q1OW7K2M9Q", "httpsÑ--mystore.omniwallet.cloud-c-OW7K2M9Q", config=defaults)
    assert status == 0
    assert lines == [
        {"input": "]Q1OW7K2M9Q", "member_id": "OW7K2M9Q", "symbology": "qr", "gs1_ai": None,
         "repairs": ["removed AIM prefix ]Q1 (QR)"], "error": None},
        {"input": "httpsÑ--mystore.omniwallet.cloud-c-OW7K2M9Q", "member_id": "OW7K2M9Q", "symbology": None,
         "gs1_ai": None, "repairs": ["keyboard layout us->es repaired", "member id from the last path segment of the card URL"],
         "error": None},
    ]


def test_exits_1_when_any_input_is_rejected_and_still_prints_every_result(defaults: Path) -> None:
    status, lines, _ = run_cli("OW7K2M9Q", "../../etc/passwd", "", config=defaults)
    assert status == 1
    assert [line["member_id"] for line in lines] == ["OW7K2M9Q", None, None]
    assert lines[1]["error"].startswith("does not look like a card") and lines[2]["error"] == "empty"


def test_escapes_are_interpreted_only_when_asked(defaults: Path) -> None:
    status, lines, _ = run_cli("--escapes", r"  OW7K2M9Q\r\n", r"OW7K2M9Q\x00\x00", config=defaults)
    assert status == 0 and [line["member_id"] for line in lines] == ["OW7K2M9Q", "OW7K2M9Q"]
    assert lines[0]["input"] == "  OW7K2M9Q\r\n"
    status, lines, _ = run_cli(r"OW7K2M9Q\r\n", config=defaults)
    assert status == 1 and "'\\\\'" in lines[0]["error"]


def test_dash_reads_one_text_per_line_from_stdin_including_undecodable_bytes(defaults: Path) -> None:
    status, lines, _ = run_cli("OW7K2M9Q", "-", config=defaults, stdin=b"]C04000123456789\r\nOW7\xffK\n")
    assert status == 1
    assert [line["member_id"] for line in lines] == ["OW7K2M9Q", "4000123456789", None]
    assert lines[1]["repairs"] == ["stripped CR/LF", "removed AIM prefix ]C0 (Code 128)"]
    assert lines[2]["input"] == "OW7\\udcffK"
    assert lines[2]["error"] == "invalid text: lone surrogate U+DCFF at position 3"


def test_undecodable_argument_is_reported_not_crashed_on(defaults: Path) -> None:
    status, lines, stderr = run_cli(b"OW7\xe9K", config=defaults)
    assert status == 1, stderr
    assert lines[0]["error"].startswith("invalid text: lone surrogate")


def test_card_settings_come_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "posbridge.toml"
    config.write_text('[cards]\npatterns = ["^LOY:(?P<member>\\\\d+)$"]\nmin_length = 3\n'
                      'scanner_layout = "us"\nhost_layout = "es"\n')
    status, lines, stderr = run_cli("LOY:123", "httpsÑ--s.example-c-OW7K2M9Q", config=config)
    assert status == 0, (lines, stderr)
    assert [line["member_id"] for line in lines] == ["123", "OW7K2M9Q"]
    assert lines[0]["repairs"] == ["member id from pattern 1"]


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "posbridge.toml"
    config.write_text('[cards]\nscanner_layout = "dvorak"\nhost_layout = "es"\n')
    status, lines, stderr = run_cli("OW7K2M9Q", config=config)
    assert status == 2 and lines == []
    assert "[cards] scanner_layout" in stderr and str(config) in stderr


def test_no_text_is_a_usage_error(defaults: Path) -> None:
    status, lines, stderr = run_cli(config=defaults)
    assert status == 2 and lines == [] and "TEXT" in stderr


GSRN = "123456789012345675"  # AI 8018 value: 17 digits and their GS1 check digit


@pytest.mark.parametrize(("args", "how"), [
    (("--aim", "]Q3", f"8018{GSRN}"), "a GS1 QR code from a camera: the AIM ID beside the text"),
    (("--escapes", f"]C10104000123456789\\x1d8018{GSRN}"), "GS1-128 with its AIM prefix, GTIN, GS, GSRN"),
    ((f"(8018){GSRN}",), "the printed form"),
], ids=["aim-option", "aim-prefix-and-gs", "printed"])
def test_a_gs1_card_gives_the_value_of_ai_8018_and_says_which_ai(args: tuple[str, ...], how: str,
                                                                  defaults: Path) -> None:
    status, lines, _ = run_cli(*args, config=defaults)
    assert status == 0, how
    assert [(line["member_id"], line["gs1_ai"]) for line in lines] == [(GSRN, "8018")], how
    assert "member id from GS1 AI (8018)" in lines[0]["repairs"]


def test_a_gs1_card_without_the_member_ai_or_with_a_wrong_check_digit_is_rejected_saying_why(
        defaults: Path) -> None:
    status, lines, _ = run_cli("--aim", "]C1", "0104000123456789", f"8018{GSRN[:-1]}0", config=defaults)
    assert status == 1
    assert lines[0]["error"].startswith("GS1 code without a member id: it holds (01)")
    assert lines[1]["error"] == "GS1 AI (8018): GSRN check digit is 0, it should be 5 (a misread, or not a GSRN)"


def test_the_member_ais_come_from_the_configuration_and_a_bad_one_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "posbridge.toml"
    config.write_text('[cards]\ngs1_member_ais = ["10", "8018"]\n')
    status, lines, _ = run_cli("--aim", "]d2", f"10AB12\x1d8018{GSRN}", config=config)
    assert status == 0 and (lines[0]["member_id"], lines[0]["gs1_ai"]) == ("AB12", "10")
    config.write_text('[cards]\ngs1_member_ais = ["8O18"]\n')
    status, _, stderr = run_cli("x", config=config)
    assert status == 2 and "[cards] gs1_member_ais" in stderr and "'8O18' is not a GS1 Application Identifier" in stderr


def test_a_malformed_aim_option_is_refused(defaults: Path) -> None:
    status, _, stderr = run_cli("--aim", "Q3", "x", config=defaults)
    assert status == 2 and "--aim must be an AIM ID such as ]Q3" in stderr
