"""The scanner manager: every configured scanner under its own supervisor; one bad scanner spoils nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from posbridge.config import from_dict
from posbridge.scanners import ScanEvent, ScanSource
from posbridge.scanners.hid import HidSource
from posbridge.scanners.manager import ScannerManager, build_source
from posbridge.scanners.serial import SerialSource
from posbridge.scanners.stdin import StdinSource
from tests.support import usbsim
from tests.support.pty import PtyScanner


def test_sources_are_built_per_type_from_the_configuration() -> None:
    settings = from_dict({"scanners": [
        {"name": "a", "type": "serial", "port": "/dev/ttyACM0"},
        {"name": "b", "type": "hid", "vid": "0c2e", "pid": "0b8f"},
        {"name": "c", "type": "stdin"},
    ]})
    assert [type(build_source(c)) for c in settings.scanners] == [SerialSource, HidSource, StdinSource]


def test_scans_from_a_serial_and_a_usb_scanner_arrive_and_a_scanner_that_cannot_be_built_is_reported() -> None:
    device = usbsim.honeywell_pos()
    backend = usbsim.SimBackend(device)

    async def main() -> None:
        with PtyScanner() as pty:
            settings = from_dict({"scanners": [
                {"name": "counter-serial", "type": "serial", "port": pty.path},
                {"name": "counter-usb", "type": "hid", "vid": "0c2e", "pid": "0b8f", "read_timeout": 0.2},
                {"name": "counter-camera", "type": "camera", "source": "/dev/video9"},
                {"name": "spare", "type": "serial", "port": "/dev/ttyS9", "enabled": False},
            ]})

            def build(config: Any) -> ScanSource:
                if config.type == "camera":
                    raise RuntimeError("camera scanners are not available in this installation")
                if config.type == "hid":
                    return HidSource(config, backend=backend)
                return build_source(config)

            got: list[tuple[str, str]] = []
            arrived = asyncio.Event()

            async def on_scan(event: ScanEvent) -> None:
                got.append((event.source, event.text))
                if len(got) == 2:
                    arrived.set()

            manager = ScannerManager(settings.scanners, on_scan, build=build)
            await manager.start()
            while not all(s.connected for s in manager.status()[:2]):
                await asyncio.sleep(0.01)
            pty.scan("OW7K2M9Q")
            device.send(*usbsim.honeywell_reports("AB12CD34"))
            await asyncio.wait_for(arrived.wait(), 5)
            statuses = {s.name: s for s in manager.status()}
            assert list(statuses) == ["counter-serial", "counter-usb", "counter-camera"]  # disabled: not started
            assert statuses["counter-camera"].last_error == (
                "cannot start: camera scanners are not available in this installation")
            await asyncio.wait_for(manager.stop(), 5)
            assert not any(s.connected for s in manager.status())
            assert device.claimed == set() and device.interfaces[0].kernel_driver, "devices closed on stop"
        assert sorted(got) == [("counter-serial", "OW7K2M9Q"), ("counter-usb", "AB12CD34")]

    asyncio.run(main())
