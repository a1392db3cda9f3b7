"""`posbridge scanners list|watch|decode` as a technician runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from posbridge.cli.root import app
from posbridge.scanners.discovery import discover, format_report, list_usb
from tests.support import usbsim

DATA = Path(__file__).parent / "data"
runner = CliRunner()
LONG_URL_START = "https://mystore.omniwallet.cloud/card?id=OW7K2M9Q&v=2&pad=xxx"


def _json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_decode_hid_pos_capture_prints_one_json_scan_per_code() -> None:
    result = runner.invoke(app, ["scanners", "decode", "--format", "hid-pos", str(DATA / "hid-pos-honeywell-url.hex")])
    assert result.exit_code == 0, result.output
    first, second = _json_lines(result.stdout)
    assert first["line"] == 8 and len(first["text"]) == 300 and first["text"].startswith(LONG_URL_START)
    assert first["symbology"] == "qr" and first["aim"] == "]Q1" and first["member_id"] == "OW7K2M9Q"
    assert second == {"line": 11, "text": "4000123456789", "symbology": "code128", "aim": "]C0",
                      "member_id": "4000123456789", "gs1_ai": None, "error": None}
    assert "no --descriptor given: guessing" in result.stderr


def test_decode_newland_capture_with_colon_separated_bytes() -> None:
    result = runner.invoke(app, ["scanners", "decode", "--format", "hid-pos", "--variant", "newland",
                                 str(DATA / "hid-pos-newland.hex")])
    assert result.exit_code == 0, result.output
    assert [s["text"] for s in _json_lines(result.stdout)] == ["https://mystore.omniwallet.cloud/c/OW7K2M9Q"]


def test_decode_keyboard_capture_uses_the_scanners_layout_and_a_scan_without_enter_ends_with_the_file() -> None:
    result = runner.invoke(app, ["scanners", "decode", "--format", "hid-keyboard", "--layout", "es",
                                 str(DATA / "hid-keyboard-es.hex")])
    assert result.exit_code == 0, result.output
    scans = _json_lines(result.stdout)
    assert [(s["line"], s["text"]) for s in scans] == [
        (89, "https://mystore.omniwallet.cloud/c/OW7K2M9Q"), ("end", "AB12CD34")]


def test_decode_reads_stdin_and_a_bad_hex_line_names_the_line_and_the_byte() -> None:
    capture = "# comment\n02 01 5d 51 31 41\n02 01 5d 51 31 4g 00\n"
    result = runner.invoke(app, ["scanners", "decode", "--format", "hid-pos", "-"], input=capture)
    assert result.exit_code == 1
    assert "stdin line 3: '4g' (byte 5) is not a hex byte" in result.stderr


def test_decode_an_impossible_report_is_named_and_decoding_goes_on() -> None:
    good = usbsim.honeywell_reports("OW7K2M9Q")[0].hex()
    bad = "02ff" + "00" * 62
    result = runner.invoke(app, ["scanners", "decode", "--format", "hid-pos", "-"], input=f"{bad}\n{good}\n")
    assert result.exit_code == 1
    assert "stdin line 1: byte 1 (data length) is 0xff" in result.stderr
    assert [s["member_id"] for s in _json_lines(result.stdout)] == ["OW7K2M9Q"]


def test_decode_refuses_an_unknown_format_and_a_missing_file() -> None:
    assert runner.invoke(app, ["scanners", "decode", "--format", "pcap", "-"], input="").exit_code == 2
    missing = runner.invoke(app, ["scanners", "decode", "--format", "hid-pos", "/nonexistent/capture.hex"])
    assert missing.exit_code == 2 and "cannot read /nonexistent/capture.hex" in missing.stderr


def test_list_json_on_this_machine_describes_what_is_there_and_says_none_found_exactly_where_nothing_is() -> None:
    result = runner.invoke(app, ["scanners", "list", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"usb", "serial", "video", "notes"}
    notes = report["notes"]
    usb_note = any(n.startswith("no USB HID devices found") or "cannot" in n for n in notes)
    assert usb_note == (not report["usb"]), notes
    assert any(n.startswith("no video devices found") for n in notes) == (not report["video"]), notes
    assert any(n.startswith("no USB serial ports") for n in notes) == (not any(p["vid"] for p in report["serial"]))
    for device in report["usb"]:
        assert re.fullmatch(r"[0-9a-f]{4}", device["vid"]) and re.fullmatch(r"[0-9a-f]{4}", device["pid"])
        assert device["interfaces"] and all(i["kind"] in ("hid-pos", "keyboard", "mouse", "hid")
                                            for i in device["interfaces"])
        assert f'vid = "{device["vid"]}", pid = "{device["pid"]}"' in device["config"]
    for port in report["serial"] + report["video"]:
        assert os.path.exists(port["device"]) and all(os.path.exists(link) for link in port["by_id"])
    text = runner.invoke(app, ["scanners", "list"])
    assert text.exit_code == 0
    assert text.stdout.count("none found") == sum(not report[k] for k in ("usb", "serial", "video"))
    for line in [f"{d['vid']}:{d['pid']}" for d in report["usb"]] + [p["device"] for p in report["serial"]]:
        assert line in text.stdout


def test_list_marks_hid_pos_scanners_keyboards_and_known_makers_with_a_config_hint() -> None:
    backend = usbsim.SimBackend(usbsim.honeywell_pos(), usbsim.keyboard_scanner())
    devices, error = list_usb(backend)
    assert error is None
    honeywell, zebra = devices
    assert honeywell.maker == "Honeywell" and honeywell.interfaces[0].kind == "hid-pos"
    assert honeywell.serial_number == "17300B1234"
    assert 'vid = "0c2e", pid = "0b8f", serial_number = "17300B1234", mode = "pos"' in honeywell.config_hint()
    assert zebra.maker == "Zebra/Symbol" and zebra.interfaces[0].kind == "keyboard"
    assert 'mode = "keyboard", layout = "us"' in zebra.config_hint()
    text = format_report(discover(backend=backend, comports=lambda: [], dev="/nonexistent"))
    assert "0c2e:0b8f Honeywell Imaging & Mobility 1400g serial 17300B1234 [Honeywell scanner maker]" in text
    assert "Serial ports:\n  none found" in text and "Video devices:\n  none found" in text


def test_watch_with_stdin_prints_each_scan_as_json_and_ends_at_end_of_input(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "POSBRIDGE_CONFIG"}
    config = tmp_path / "posbridge.toml"
    config.write_text('[storage]\npath = "state/posbridge.db"\n')
    completed = subprocess.run(
        [sys.executable, "-m", "posbridge.cli", "scanners", "watch", "--stdin", "--config", str(config)],
        input=b"https://mystore.omniwallet.cloud/c/OW7K2M9Q\r\n\x00\x01garbage\nAB12CD34", capture_output=True,
        env=env, timeout=30)
    assert completed.returncode == 0, completed.stderr.decode()
    scans = _json_lines(completed.stdout.decode())
    assert [(s["source"], s["member_id"]) for s in scans] == [("stdin", "OW7K2M9Q"), ("stdin", None),
                                                              ("stdin", "AB12CD34")]
    assert scans[1]["error"] and scans[0]["member"] is None  # no look-up without --lookup
    assert "standard input has ended" in completed.stderr.decode()


def test_decode_an_alt_code_capture_gives_the_text_whatever_the_layout() -> None:
    for layout in ("us", "fr"):
        result = runner.invoke(app, ["scanners", "decode", "--format", "hid-keyboard", "--layout", layout,
                                     str(DATA / "hid-keyboard-altcode.hex")])
        assert result.exit_code == 0, result.output
        assert [(s["text"], s["member_id"]) for s in _json_lines(result.stdout)] == [("SIP-4-1", "SIP-4-1")]


def test_decode_a_keyboard_capture_with_ctrl_j_terminators_gives_one_scan_per_code() -> None:
    result = runner.invoke(app, ["scanners", "decode", "--format", "hid-keyboard",
                                 str(DATA / "hid-keyboard-ctrl-j.hex")])
    assert result.exit_code == 0, result.output
    assert [s["text"] for s in _json_lines(result.stdout)] == ["OW7K2M9Q", "AB12CD34"]


def test_decode_with_the_report_descriptor_reads_the_zebra_layout_and_ends_an_unfinished_code_by_time() -> None:
    result = runner.invoke(app, ["scanners", "decode", "--format", "hid-pos", "--descriptor",
                                 str(DATA / "zebra-style.descriptor.hex"), str(DATA / "hid-pos-zebra-unfinished.hex")])
    assert result.exit_code == 0, result.output
    scans = _json_lines(result.stdout)
    assert [(s["line"], s["text"], s["aim"]) for s in scans] == [
        (4, "OW7K2M9Q" + "0" * 47, "]Q1"), (4, "AB12CD34", "]C0")]
    assert "decoding with the report descriptor in" in result.stderr and "data at 6-60" in result.stderr
    assert "never got its last report" in result.stderr


def test_decode_a_honeywell_report_without_aim_id_needs_the_descriptor_and_is_refused_without(tmp_path: Path) -> None:
    capture = usbsim.honeywell_reports("OW7K2M9Q", aim="\x00\x00\x00", code_id="\x00")[0].hex() + "\n"
    guessed = runner.invoke(app, ["scanners", "decode", "--format", "hid-pos", "-"], input=capture)
    assert guessed.exit_code == 1 and "cannot be told apart" in guessed.stderr
    assert _json_lines(guessed.stdout) == []
    descriptor = tmp_path / "honeywell.descriptor.hex"
    descriptor.write_text(usbsim.HONEYWELL_POS_DESCRIPTOR.hex())
    exact = runner.invoke(app, ["scanners", "decode", "--format", "hid-pos", "--descriptor", str(descriptor), "-"],
                          input=capture)
    assert exact.exit_code == 0 and [s["member_id"] for s in _json_lines(exact.stdout)] == ["OW7K2M9Q"]


def test_decode_refuses_a_descriptor_that_is_not_hex_or_not_hid_pos(tmp_path: Path) -> None:
    bad = tmp_path / "bad.hex"
    bad.write_text("05 8c zz\n")
    result = runner.invoke(app, ["scanners", "decode", "--format", "hid-pos", "--descriptor", str(bad), "-"], input="")
    assert result.exit_code == 2 and "'zz' is not hex" in result.stderr
    bad.write_text(usbsim.BOOT_KEYBOARD_DESCRIPTOR.hex())
    result = runner.invoke(app, ["scanners", "decode", "--format", "hid-pos", "--descriptor", str(bad), "-"], input="")
    assert result.exit_code == 2 and "no Decoded Data input" in result.stderr
