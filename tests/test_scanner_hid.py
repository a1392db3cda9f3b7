"""USB HID scanners through real pyusb on a simulated bus (tests/support/usbsim.py): HID POS and keyboard mode."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from posbridge.config import HidScanner
from posbridge.scanners import ScanEvent, ScannerGone, ScannerUnavailable
from posbridge.scanners.hid import HidSource
from posbridge.scanners.supervisor import ScannerStatus, supervise
from tests.support import usbsim
from tests.support.usbsim import SimBackend

CARD_URL = "https://mystore.omniwallet.cloud/card?id=OW7K2M9Q&v=2"
LONG_URL = CARD_URL + "&pad=" + "x" * (300 - len(CARD_URL) - 5)
assert len(LONG_URL) == 300


def _config(device: usbsim.SimDevice, **values: Any) -> HidScanner:
    return HidScanner.model_validate({"name": "till", "type": "hid", "vid": device.vid, "pid": device.pid,
                                      "read_timeout": 0.2, **values})


def _read_until(source: HidSource, count: int, timeout: float = 20.0) -> list[ScanEvent]:
    events: list[ScanEvent] = []
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        events += source.read()
    return events


@pytest.mark.parametrize(("device", "reports", "symbology"), [
    (usbsim.honeywell_pos(), usbsim.honeywell_reports(LONG_URL, aim="]Q1", code_id="s"), "qr"),
    (usbsim.newland_pos(), usbsim.newland_reports(LONG_URL), None),
], ids=["honeywell", "newland"])
def test_a_300_character_url_sent_over_six_hid_pos_reports_arrives_as_one_scan(
        device: usbsim.SimDevice, reports: list[bytes], symbology: str | None) -> None:
    assert len(reports) == 6
    source = HidSource(_config(device), backend=SimBackend(device))
    source.open()
    device.send(*reports)
    events = _read_until(source, 1)
    source.close()
    assert [e.text for e in events] == [LONG_URL]
    assert events[0].symbology == symbology
    assert events[0].raw == b"".join(reports)
    assert events[0].source == "till"


def test_a_newland_code_that_itself_starts_with_an_aim_prefix_keeps_it_in_the_text() -> None:
    device = usbsim.newland_pos()
    source = HidSource(_config(device), backend=SimBackend(device))
    source.open()
    device.send(*usbsim.newland_reports("]Q1OW7K2M9Q"))
    events = _read_until(source, 1)
    source.close()
    assert [e.text for e in events] == ["]Q1OW7K2M9Q"]  # cards.py strips the AIM prefix, not the driver


def test_opening_detaches_the_kernel_driver_and_closing_gives_the_scanner_back_to_the_desktop() -> None:
    device = usbsim.honeywell_pos()
    source = HidSource(_config(device), backend=SimBackend(device))
    source.open()
    assert device.interfaces[0].kernel_driver is False and device.claimed == {0}
    assert device.set_configuration_calls == 0, "an already configured device is not reset"
    source.close()
    assert device.interfaces[0].kernel_driver is True and device.claimed == set()
    source.close()  # twice is fine


def test_an_unconfigured_device_gets_its_configuration_set() -> None:
    device = usbsim.honeywell_pos()
    device.configuration = 0
    source = HidSource(_config(device), backend=SimBackend(device))
    source.open()
    assert device.set_configuration_calls == 1 and device.configuration == 1
    source.close()


@pytest.mark.parametrize("layout", ["us", "es", "fr", "de", "pt", "br-abnt2"])
def test_a_keyboard_mode_scanner_typing_a_card_url_is_decoded_with_the_scanners_layout(layout: str) -> None:
    text = CARD_URL + "&n=007"  # "00": the same key twice in a row
    device = usbsim.keyboard_scanner()
    source = HidSource(_config(device, mode="keyboard", layout=layout), backend=SimBackend(device))
    source.open()
    device.send(*usbsim.keyboard_reports(text, layout))
    device.send(*usbsim.keyboard_reports("AB12CD34", layout, shift_first=True))
    events = _read_until(source, 2)
    source.close()
    assert [e.text for e in events] == [text, "AB12CD34"]
    assert all(e.symbology is None for e in events)


def test_a_keyboard_scan_ends_at_keypad_enter_tab_or_100_ms_without_keys_when_enter_is_lost() -> None:
    device = usbsim.keyboard_scanner()
    source = HidSource(_config(device, mode="keyboard", read_timeout=30.0), backend=SimBackend(device))
    source.open()
    device.send(*usbsim.keyboard_reports("KP000001", "us", suffix=0x58))
    device.send(*usbsim.keyboard_reports("TAB00002", "us", suffix=0x2B))
    device.send(*usbsim.keyboard_reports("LOST0003", "us", suffix=None))
    started = time.monotonic()
    events = _read_until(source, 3)
    elapsed = time.monotonic() - started
    device.send(*usbsim.keyboard_reports("NEXT0004", "us"))
    events += _read_until(source, 1)
    source.close()
    assert [e.text for e in events] == ["KP000001", "TAB00002", "LOST0003", "NEXT0004"]
    assert elapsed < 20, "the lost Enter is made up for by the 100 ms gap, not by the 30 s read timeout"


def test_error_rollover_reports_are_ignored_and_ctrl_bracket_types_a_gs_separator() -> None:
    device = usbsim.keyboard_scanner()
    source = HidSource(_config(device, mode="keyboard"), backend=SimBackend(device))
    source.open()
    a_down, release = bytes([0, 0, 0x04, 0, 0, 0, 0, 0]), bytes(8)
    rollover = bytes([0, 0, 1, 1, 1, 1, 1, 1])
    gs = bytes([0x01, 0, 0x30, 0, 0, 0, 0, 0])  # Ctrl+] on US = GS (0x1D), the GS1 separator
    device.send(a_down, rollover, a_down, release, gs, release,
                *usbsim.keyboard_reports("1", "us"))
    events = _read_until(source, 1)
    source.close()
    assert [e.text for e in events] == ["a\x1d1"]


def test_unplugging_mid_code_discards_the_partial_code_and_after_replugging_the_next_scan_arrives(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "posbridge.scanners")
    device = usbsim.honeywell_pos()
    backend = SimBackend(device)
    reports = usbsim.honeywell_reports(LONG_URL)

    async def main() -> tuple[list[str], ScannerStatus]:
        got: list[str] = []
        stop = asyncio.Event()
        status = ScannerStatus("till", "hid")

        async def on_scan(event: ScanEvent) -> None:
            got.append(event.text)

        source = HidSource(_config(device), backend=backend)
        task = asyncio.create_task(supervise(source, on_scan, debounce=0, stop=stop, status=status,
                                             backoff_initial=0.05, backoff_max=0.2))
        while not status.connected:
            await asyncio.sleep(0.01)
        device.send(*reports[:3])  # half of a code ...
        await asyncio.to_thread(device.wait_drained)
        device.unplug()  # ... and the cable is pulled
        while status.connected:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        device.replug()
        while not status.connected:
            await asyncio.sleep(0.01)
        device.send(*usbsim.honeywell_reports("OW7K2M9Q"))
        for _ in range(300):
            if got:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)
        return got, status

    got, status = asyncio.run(main())
    assert got == ["OW7K2M9Q"], "the half code from before the unplug is not glued to the next one"
    assert status.reconnects == 1
    assert device.interfaces[0].kernel_driver is True, "closed cleanly: usbhid is bound again"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("was unplugged" in m for m in messages) == 1
    assert sum("no USB device 0c2e:0b8f is plugged in" in m for m in messages) == 1


def test_unplug_during_a_read_raises_scanner_gone() -> None:
    device = usbsim.honeywell_pos()
    source = HidSource(_config(device), backend=SimBackend(device))
    source.open()
    device.unplug()
    with pytest.raises(ScannerGone, match="unplugged"):
        source.read()
    source.close()


@pytest.mark.parametrize("code", [5, 75])
def test_a_transfer_error_makes_the_supervisor_reopen_the_device(code: int) -> None:
    device = usbsim.honeywell_pos()
    source = HidSource(_config(device), backend=SimBackend(device))
    source.open()
    device.fail_next_read(code)
    with pytest.raises(ScannerGone, match="reopening"):
        source.read()
    source.close()


def test_access_denied_names_the_udev_rule_and_the_plugdev_group() -> None:
    device = usbsim.honeywell_pos()
    device.access_denied = True
    source = HidSource(_config(device), backend=SimBackend(device))
    with pytest.raises(ScannerUnavailable) as caught:
        source.open()
    assert "drivers/99-posbridge-scanners.rules" in str(caught.value) and "plugdev" in str(caught.value)
    source.close()


def test_access_denied_is_reported_even_when_a_serial_number_must_be_read_to_find_the_device() -> None:
    device = usbsim.honeywell_pos(serial="ABC")
    device.access_denied = True
    source = HidSource(_config(device, serial_number="ABC"), backend=SimBackend(device))
    with pytest.raises(ScannerUnavailable, match="udev rule"):
        source.open()


def test_a_device_held_by_another_program_is_reported_busy() -> None:
    device = usbsim.honeywell_pos()
    device.interfaces[0].kernel_driver = False
    device.held_by_other.add(0)
    source = HidSource(_config(device), backend=SimBackend(device))
    with pytest.raises(ScannerUnavailable, match="busy: another program"):
        source.open()


def test_the_scanner_is_told_apart_by_serial_number_and_an_absent_one_is_named() -> None:
    first, second = usbsim.honeywell_pos(serial="AAA"), usbsim.honeywell_pos(serial="BBB")
    second.address = 9
    backend = SimBackend(first, second)
    source = HidSource(_config(second, serial_number="BBB"), backend=backend)
    source.open()
    second.send(*usbsim.honeywell_reports("OW7K2M9Q"))
    first.send(*usbsim.honeywell_reports("NOTTHIS1"))
    assert [e.text for e in _read_until(source, 1)] == ["OW7K2M9Q"]
    source.close()
    missing = HidSource(_config(first, serial_number="CCC"), backend=backend)
    with pytest.raises(ScannerUnavailable, match=r"no USB device 0c2e:0b8f \(serial CCC\) .*0c2e:0b8f, 0c2e:0b8f"):
        missing.open()


def test_a_mode_mismatch_says_which_programming_code_to_scan() -> None:
    keyboard = usbsim.keyboard_scanner()
    with pytest.raises(ScannerUnavailable, match="keyboard mode but mode = \"pos\""):
        HidSource(_config(keyboard, mode="pos"), backend=SimBackend(keyboard)).open()
    assert keyboard.interfaces[0].kernel_driver is True, "a failed open gives the device back"
    pos = usbsim.honeywell_pos()
    with pytest.raises(ScannerUnavailable, match="HID POS mode but mode = \"keyboard\""):
        HidSource(_config(pos, mode="keyboard"), backend=SimBackend(pos)).open()


def test_a_malformed_report_is_logged_and_skipped_and_the_next_code_arrives(caplog: pytest.LogCaptureFixture) -> None:
    device = usbsim.honeywell_pos()
    source = HidSource(_config(device), backend=SimBackend(device))
    source.open()
    bad = bytearray(usbsim.honeywell_reports("X")[0])
    bad[1] = 0xFF  # a length no report can hold
    device.send(bytes(bad), *usbsim.honeywell_reports("OW7K2M9Q"))
    events = _read_until(source, 1)
    source.close()
    assert [e.text for e in events] == ["OW7K2M9Q"]
    assert "makes no sense" in caplog.text and "0xff = 255" in caplog.text


# HID POS by descriptor, unfinished codes, keyboard terminators and Alt codes, through the real driver ------------

@pytest.mark.parametrize(("device", "reports", "symbology"), [
    (usbsim.honeywell_pos(), usbsim.honeywell_reports(LONG_URL, aim="]Q1", code_id="s"), "qr"),
    (usbsim.zebra_pos(), usbsim.zebra_reports(LONG_URL, aim="]z0"), "aztec"),
    (usbsim.newland_pos(), usbsim.newland_reports(LONG_URL), None),
], ids=["honeywell", "zebra", "newland"])
def test_each_vendor_layout_is_decoded_from_the_devices_own_report_descriptor(
        device: usbsim.SimDevice, reports: list[bytes], symbology: str | None) -> None:
    source = HidSource(_config(device), backend=SimBackend(device))
    source.open()
    device.send(*reports)
    events = _read_until(source, 1)
    source.close()
    assert [(e.text, e.symbology) for e in events] == [(LONG_URL, symbology)]


def test_a_honeywell_report_whose_symbology_bytes_are_zero_gives_the_whole_member_id() -> None:
    device = usbsim.honeywell_pos()
    source = HidSource(_config(device), backend=SimBackend(device))
    source.open()
    device.send(*usbsim.honeywell_reports("OW7K2M9Q", aim="\x00\x00\x00", code_id="\x00"))
    events = _read_until(source, 1)
    source.close()
    assert [(e.text, e.aim) for e in events] == [("OW7K2M9Q", None)]


def test_a_report_that_does_not_fit_the_descriptor_is_refused_with_byte_counts_and_the_next_code_arrives(
        caplog: pytest.LogCaptureFixture) -> None:
    device = usbsim.zebra_pos()
    source = HidSource(_config(device), backend=SimBackend(device))
    source.open()
    device.send(usbsim.zebra_reports("OW7K2M9Q")[0][:40], *usbsim.zebra_reports("AB12CD34"))
    events = _read_until(source, 1)
    source.close()
    assert [e.text for e in events] == ["AB12CD34"]
    assert "report 2 of 40 bytes does not fit the scanner's report descriptor, which makes it 64 bytes" in caplog.text


def test_a_code_whose_closing_report_never_comes_ends_after_the_idle_gap_logged_and_not_glued(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "posbridge.scanners")
    device = usbsim.zebra_pos()
    source = HidSource(_config(device, read_timeout=30.0), backend=SimBackend(device))
    source.open()
    exactly_one_report = "OW7K2M9Q" + "0" * 47  # 55 bytes: the firmware bug keeps the continued flag set
    device.send(*usbsim.zebra_reports(exactly_one_report, last_flag=False))
    started = time.monotonic()
    first = source.read()
    waited = time.monotonic() - started
    device.send(*usbsim.zebra_reports("AB12CD34"))
    second = _read_until(source, 1)
    source.close()
    assert [e.text for e in first] == [exactly_one_report]
    assert waited < 20, "ended by the 100 ms gap, not by the 30 s read timeout"
    assert [e.text for e in second] == ["AB12CD34"]
    assert "never got its last report" in caplog.text and "after 100 ms" in caplog.text


def test_a_device_that_gives_no_report_descriptor_is_decoded_by_guessing_and_the_log_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    device = usbsim.honeywell_pos()
    device.interfaces[0].report_descriptor = b""  # GET_DESCRIPTOR answers nothing
    device.interfaces[0].protocol = 0
    source = HidSource(_config(device), backend=SimBackend(device))
    source.open()
    device.send(*usbsim.honeywell_reports("OW7K2M9Q"))
    events = _read_until(source, 1)
    source.close()
    assert [e.text for e in events] == ["OW7K2M9Q"]
    assert "gave no report descriptor; decoding its reports by guessing" in caplog.text


@pytest.mark.parametrize("terminator", [
    usbsim.chord(0x01, 0x0D), usbsim.chord(0x01 | 0x02, 0x0D)], ids=["ctrl-j", "ctrl-shift-j"])
def test_a_keyboard_scanner_ending_codes_with_a_control_chord_gives_one_scan_per_code(
        terminator: list[bytes]) -> None:
    device = usbsim.keyboard_scanner()
    source = HidSource(_config(device, mode="keyboard", read_timeout=1.0), backend=SimBackend(device))
    source.open()
    enter = usbsim.keyboard_reports("", "us")
    device.send(*usbsim.keyboard_reports("OW7K2M9Q", "us", suffix=None), *terminator)
    device.send(*usbsim.keyboard_reports("AB12CD34", "us"), *terminator)  # Enter, then the chord on its own
    device.send(*terminator, *enter, bytes([0x02, 0, 0, 0, 0, 0, 0, 0]), bytes(8))  # chord, Enter, Shift alone
    device.send(*usbsim.keyboard_reports("NEXT0004", "us"))
    events = _read_until(source, 3)
    source.close()
    assert [e.text for e in events] == ["OW7K2M9Q", "AB12CD34", "NEXT0004"]  # lone chord, Enter, Shift: no scans


@pytest.mark.parametrize("layout", ["us", "fr", "de"])
def test_an_alt_code_scanner_is_decoded_whatever_the_configured_layout(layout: str) -> None:
    device = usbsim.keyboard_scanner()
    source = HidSource(_config(device, mode="keyboard", layout=layout), backend=SimBackend(device))
    source.open()
    device.send(*usbsim.alt_code_reports("SIP-4-1"), *usbsim.alt_code_reports("Ñú-€"))
    events = _read_until(source, 2)
    source.close()
    assert [e.text for e in events] == ["SIP-4-1", "Ñú-€"]
