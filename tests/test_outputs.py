"""Keystroke outputs: what the till receives, decoded as the till's keyboard layout reads it.

The USB gadget path writes into a FIFO instead of /dev/hidg0 and the reports are decoded with the project's
own keyboard-report decoder; the uinput path's event frames go through the same decoder after the kernel's
usage table turns them back into reports. Every layout, every character of the card alphabet and of URLs.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib.util
import logging
import os
import string
from pathlib import Path

import pytest

from posbridge.config import CardSettings, OutputSettings
from posbridge.errors import UntypableText
from posbridge.layouts import LAYOUTS
from posbridge.outputs import Outputs
from posbridge.outputs.gadget import HidGadgetOutput
from posbridge.outputs.keystrokes import boot_reports, plan
from posbridge.outputs.uinput import UinputOutput, frames_for
from posbridge.scanners.hub import ScanHub
from tests.support.keyboard import read_reports, reports_from_events

CARD_ALPHABET = string.ascii_letters + string.digits + "_-"
URL_CHARACTERS = string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%"
NEEDS_EVDEV = pytest.mark.skipif(importlib.util.find_spec("evdev") is None, reason="python-evdev is not installed "
                                 "(x86_64: evdev-binary comes with posbridge; elsewhere: pip install 'posbridge[uinput]')")
SAMPLE_URLS = ["https://mystore.omniwallet.cloud/c/OW7K2M9Q", "https://s.example/card?id=AB_12-cd&v=2#top",
               "http://[::1]:8080/~shop/c/OW7K2M9Q?x=1+2;y=%41"]


def scan(member_id: str | None = "OW7K2M9Q", *, text: str | None = None, status: int | None = 200,
         cache: str = "fresh", data: dict | None = None, error: str | None = None) -> dict:
    member = None if status is None else {"status": status, "cache": cache, "data": data or {"name": "Ana"}}
    return {"source": "test", "text": text or member_id or "", "symbology": None, "member_id": member_id,
            "member": member, "error": error, "at": "2026-01-01T00:00:00.000Z"}


@pytest.fixture
def fifo(tmp_path: Path):
    path = tmp_path / "hidg0"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield path, reader
    os.close(reader)


def drain(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def gadget(path: Path, **keys) -> HidGadgetOutput:
    values = {"type": "hid-gadget", "name": "till", "device": str(path), "key_delay": 0, **keys}
    return HidGadgetOutput(OutputSettings(**values))


def type_through_fifo(fifo, published: dict, **keys) -> tuple[HidGadgetOutput, str, bytes]:
    path, reader = fifo
    output = gadget(path, **keys)

    async def go() -> str:
        assert await output.open()
        try:
            return await output.handle(published)
        finally:
            await output.close()

    result = asyncio.run(go())
    return output, result, drain(reader)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("text", [CARD_ALPHABET, URL_CHARACTERS, *SAMPLE_URLS])
def test_gadget_types_every_card_and_url_character_that_the_till_reads_back(fifo, layout, text):
    output, result, data = type_through_fifo(fifo, scan(text=text), layout=layout, what="text", when="any")
    assert result == "typed", output.last
    assert read_reports(data, layout) == [text]


@NEEDS_EVDEV
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("text", [CARD_ALPHABET, URL_CHARACTERS, *SAMPLE_URLS])
def test_uinput_events_read_back_as_the_same_text_in_every_layout(layout, text):
    events = []
    for frame in frames_for(plan(text, layout)):
        events += [(1, code, value) for code, value in frame] + [(0, 0, 0)]
    assert read_reports(reports_from_events(events), layout) == [text]


@NEEDS_EVDEV
def test_uinput_and_gadget_press_the_same_keys():
    keys = plan("https://s.example/c/OW7K2M9Q", "es")
    events = []
    for frame in frames_for(keys):
        events += [(1, code, value) for code, value in frame] + [(0, 0, 0)]
    assert reports_from_events(events) == b"".join(boot_reports(keys))


def test_the_member_id_is_typed_with_enter_by_default(fifo):
    _, result, data = type_through_fifo(fifo, scan("OW7K2M9Q", text="https://s.example/c/OW7K2M9Q"))
    assert result == "typed"
    assert read_reports(data, "us") == ["OW7K2M9Q"]
    assert data[-16:-8] == bytes([0, 0, 0x28, 0, 0, 0, 0, 0])  # Enter, then its release


def test_prefix_and_suffix_can_be_tab_or_nothing(fifo):
    _, _, data = type_through_fifo(fifo, scan("AB12CD"), prefix="tab", suffix="none")
    reports = [data[i:i + 8] for i in range(0, len(data), 8)]
    assert reports[0][2] == 0x2B  # Tab first
    assert 0x28 not in {r[2] for r in reports}  # no Enter
    assert read_reports(data, "us") == ["AB12CD"]  # ended by the decoder's end of input, nothing lost


def test_repeated_characters_are_separate_key_presses(fifo):
    _, _, data = type_through_fifo(fifo, scan("OW0000AA"))
    assert read_reports(data, "us") == ["OW0000AA"]


def test_a_character_the_layout_cannot_type_is_refused_before_any_key(fifo, caplog):
    caplog.set_level(logging.ERROR, "posbridge.outputs")
    output, result, data = type_through_fifo(fifo, scan(text="OW7K2M9Qñ"), what="text", when="any")
    assert result == "refused"
    assert data == b""  # not half an id
    assert "'ñ' (U+00F1)" in output.last["reason"] and "us keyboard layout" in output.last["reason"]
    assert "'ñ' (U+00F1)" in caplog.text


def test_text_too_long_to_type_is_refused_whole(fifo):
    output, result, data = type_through_fifo(fifo, scan(text="A" * 257), what="text", when="any")
    assert (result, data) == ("refused", b"")
    assert "257 characters; at most 256" in output.last["reason"]


def test_the_refusal_names_every_untypable_character_once():
    with pytest.raises(UntypableText) as caught:
        plan("a\x1dbñ\x1d", "us")
    assert caught.value.characters == ["\x1d", "ñ"]
    assert "U+001D" in str(caught.value) and "nothing was typed" in str(caught.value)


def test_a_spanish_till_receives_n_tilde_that_a_us_till_cannot(fifo):
    _, result, data = type_through_fifo(fifo, scan(text="PEÑA-01"), layout="es", what="text", when="any")
    assert result == "typed"
    assert read_reports(data, "es") == ["PEÑA-01"]


@pytest.mark.parametrize("published, why", [
    (scan(status=404), "HTTP 404"),
    (scan(status=503, error="cloud unreachable"), "HTTP 503"),
    (scan(None, text="hello", status=None, error="not a card: too short"), "not a member card"),
    (scan(status=200, data={"id": "OW7K2M9Q", "provisional": True}), "provisional"),
])
def test_only_confirmed_members_are_typed_by_default(fifo, published, why):
    output, result, data = type_through_fifo(fifo, published)
    assert result == "skipped"
    assert data == b""
    assert why in output.last["reason"]


def test_when_any_types_members_the_cloud_does_not_know(fifo):
    _, result, data = type_through_fifo(fifo, scan("ZZ99ZZ99", status=404), when="any")
    assert result == "typed"
    assert read_reports(data, "us") == ["ZZ99ZZ99"]


def test_a_cached_member_is_typed_while_the_cloud_is_down(fifo):
    _, result, data = type_through_fifo(fifo, scan("OW7K2M9Q", cache="stale"))
    assert result == "typed"
    assert read_reports(data, "us") == ["OW7K2M9Q"]


def test_a_till_that_stops_reading_fails_the_scan_with_the_reason_instead_of_hanging(fifo):
    path, reader = fifo
    writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    fcntl.fcntl(writer, 1031, 4096)  # F_SETPIPE_SZ: the smallest pipe, then fill it: nobody reads
    try:
        while True:
            os.write(writer, b"\0" * 512)
    except BlockingIOError:
        pass
    output, result, _ = type_through_fifo(fifo, scan("OW7K2M9Q"), write_timeout=0.2)
    os.close(writer)
    assert result == "failed"
    assert "did not read the keyboard within 0.2 s" in output.last["reason"]
    assert output.connected is False and "USB cable" in output.problem


def test_a_missing_gadget_device_names_the_setup_command(tmp_path):
    output = gadget(tmp_path / "no-hidg0")
    assert asyncio.run(output.open()) is False
    assert "posbridge gadget setup" in output.problem
    assert output.status()["connected"] is False


def test_outputs_type_the_scans_the_hub_publishes_in_order(fifo):
    path, reader = fifo

    async def lookup(member_id: str):
        from posbridge.scanners.hub import MemberLookup

        return MemberLookup(200 if member_id != "NOPE0000" else 404, "fresh", {"name": "x"})

    async def go() -> list[dict]:
        from posbridge.scanners import ScanEvent

        hub = ScanHub(CardSettings(), lookup)
        outputs = Outputs([OutputSettings(type="hid-gadget", device=str(path), key_delay=0)], hub)
        await outputs.start()
        for text in ("AAAA1111", "NOPE0000", "https://s.example/c/BBBB2222"):
            await hub.handle(ScanEvent(text=text, raw=text.encode(), symbology=None, source="t", at=0.0))
        output = outputs.outputs[0]
        deadline = asyncio.get_running_loop().time() + 20
        while output.typed + output.skipped < 3:  # typing happens on the output's own task: wait for it
            assert asyncio.get_running_loop().time() < deadline, output.status()
            await asyncio.sleep(0.01)
        status = outputs.status()
        await outputs.stop()
        return status

    status = asyncio.run(go())
    assert status[0]["typed"] == 2 and status[0]["skipped"] == 1 and status[0]["connected"] is True
    assert read_reports(drain(reader), "us") == ["AAAA1111", "BBBB2222"]


@NEEDS_EVDEV
@pytest.mark.skipif(not os.path.exists("/dev/uinput"),
                    reason="/dev/uinput does not exist on this machine (no uinput module, or a container without "
                           "the device): the real virtual keyboard cannot be created here")
def test_a_real_uinput_keyboard_types_the_member_id(tmp_path):
    import evdev

    output = UinputOutput(OutputSettings(type="uinput", key_delay="1ms", layout="us"))

    async def go() -> list[tuple[int, int, int]]:
        if not await output.open():
            pytest.skip(f"cannot create a uinput keyboard here: {output.problem}")
        try:
            device = next(evdev.InputDevice(p) for p in evdev.list_devices()
                          if evdev.InputDevice(p).name == "posbridge keyboard")
            device.grab()
            await output.handle(scan("OW7K2M9Q"))
            events = []
            while not any(kind == 1 and code == evdev.ecodes.KEY_ENTER and value == 0 for kind, code, value in events):
                event = await asyncio.wait_for(device.async_read_one(), 5)
                if event.type in (0, 1):
                    events.append((event.type, event.code, event.value))
            device.ungrab()
            return events
        finally:
            await output.close()

    assert read_reports(reports_from_events(asyncio.run(go())), "us") == ["OW7K2M9Q"]


@pytest.mark.parametrize("entry, words", [
    ({"type": "keyboard"}, "type"),
    ({"type": "uinput", "layout": "xx"}, "layout"),
    ({"type": "uinput", "suffix": "space"}, "suffix"),
    ({"type": "uinput", "what": "name"}, "what"),
    ({"type": "uinput", "when": "always"}, "when"),
    ({"type": "uinput", "key_delay": "2s"}, "more than a second"),
    ({"type": "uinput", "key_delay": -1}, "negative"),
    ({"type": "uinput", "key_delay": "fast"}, "not a duration"),
    ({"type": "uinput", "device": ""}, "device"),
    ({"type": "uinput", "typo": 1}, "unknown key"),
    ({"layout": "es"}, "type"),
])
def test_bad_output_config_names_the_entry_and_key(entry, words):
    from posbridge import config
    from posbridge.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        config.from_dict({"outputs": [entry]})
    assert "[[outputs]] #1" in str(caught.value) and words in str(caught.value)


def test_two_outputs_with_one_name_are_refused():
    from posbridge import config
    from posbridge.errors import ConfigError

    with pytest.raises(ConfigError, match="two outputs are named 'uinput'"):
        config.from_dict({"outputs": [{"type": "uinput"}, {"type": "uinput"}]})


def test_the_daemon_types_a_serial_scan_into_the_till(sandbox, tmp_path, fifo):
    """End to end: a card read by a serial scanner (a pty) is validated at the sandbox and typed through the
    USB keyboard gadget (a FIFO) in the till's Spanish layout; /v1/status shows the output connected."""
    from tests.support.daemon import DaemonProcess
    from tests.support.pty import PtyScanner

    path, reader = fifo
    with PtyScanner() as scanner:
        daemon = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account,
                               scanners=[{"name": "counter", "type": "serial", "port": scanner.path}])
        with daemon.config_path.open("a") as config:
            config.write(f'\n[[outputs]]\nname = "till"\ntype = "hid-gadget"\ndevice = "{path}"\nlayout = "es"\n')
        daemon.start()
        try:
            daemon.wait_for(lambda: any(s["connected"] for s in daemon.status()["scanners"]), what="scanner open")
            assert daemon.status()["outputs"][0]["connected"] is True
            scanner.scan("]Q1https://mystore.omniwallet.cloud/c/OW7K2M9Q")
            received = bytearray()

            def typed_enter() -> bool:
                received.extend(drain(reader))
                return bytes([0, 0, 0x28]) in received  # Enter's press report: the id is complete

            daemon.wait_for(typed_enter, what="the member id typed, then Enter")
            assert read_reports(bytes(received), "es") == ["OW7K2M9Q"]
            assert daemon.status()["outputs"][0]["typed"] == 1
        finally:
            daemon.stop()
