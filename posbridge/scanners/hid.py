"""USB HID scanners through pyusb: HID POS mode (``mode = "pos"``) and keyboard mode (``mode = "keyboard"``).

Reading the device directly, instead of through the desktop's keyboard input, means a scan never types into
whatever window has focus, the layout is the scanner's (not the till's), and HID POS gives the symbology and
codes of any length. The sequence follows pyusb's documentation: find by ids (and serial number), detach the
kernel driver from each HID interface, set the configuration only when the device has none, claim, read the
interrupt IN endpoint; on close release, re-attach the kernel driver and dispose of the resources, so the
scanner works as a keyboard again when posbridge stops.

In HID POS mode the interface's report descriptor (``GET_DESCRIPTOR``, type 0x22) says where the data, AIM ID,
byte count and continued flag are (:mod:`posbridge.scanners.hiddescriptor`); only a device that will not give
its descriptor is decoded by guessing among the known vendor layouts, and the log says so. A code whose last
report never comes, and a keyboard scan without Enter, end after ``idle_gap`` (100 ms) without a report.

The backend is injectable: ``HidSource(config, backend=...)``; the default is libusb from the ``libusb-package``
wheel (:func:`libusb_backend`), so no system libusb is needed; tests pass the simulated bus of
``tests/support/usbsim.py``. Report decoding lives in :mod:`posbridge.scanners.hidreports` (HID POS) and
:mod:`posbridge.scanners.keyboard` (keyboard mode).
"""

from __future__ import annotations

import errno
import logging
import time
from typing import Any, Protocol

import usb.core
import usb.util

from posbridge.config import HidScanner
from posbridge.errors import DescriptorError, ReportError
from posbridge.scanners import INSTALL_UDEV_RULE, UDEV_RULE, ScanEvent, ScannerGone, ScannerUnavailable
from posbridge.scanners.hiddescriptor import is_hid_pos
from posbridge.scanners.hidreports import DecodedScan, HidPosDecoder
from posbridge.scanners.keyboard import KeyboardDecoder

log = logging.getLogger("posbridge.scanners.hid")

NEWLAND_VID = 0x1EAB
HONEYWELL_VID = 0x0C2E


def libusb_backend() -> Any:
    """pyusb's libusb 1.0 backend over the libusb shipped in the ``libusb-package`` wheel (None if unusable).

    The default wherever a pyusb backend can be passed (``HidSource``, ``scanners list``, doctor)."""
    import libusb_package

    return libusb_package.get_libusb1_backend()


class _Decoder(Protocol):
    """What the read loop needs of :class:`HidPosDecoder` and :class:`KeyboardDecoder`."""

    def feed(self, report: bytes, now: float) -> list[DecodedScan]: ...  # noqa: E704
    def expire(self, now: float) -> list[DecodedScan]: ...  # noqa: E301, E704
    def time_left(self, now: float) -> float | None: ...  # noqa: E301, E704
    def reset(self) -> None: ...  # noqa: E301, E704


def usb_ids(vid: int, pid: int, serial_number: str | None = None) -> str:
    """``0c2e:0b8f`` or ``0c2e:0b8f (serial 17300B1234)`` for messages."""
    return f"{vid:04x}:{pid:04x}" + (f" (serial {serial_number})" if serial_number else "")


def map_usb_error(exc: usb.core.USBError, ids: str) -> ScannerUnavailable | ScannerGone:
    """The supervisor's view of a pyusb error: what happened to the device and what to do about it."""
    code = exc.errno
    if code == errno.ENODEV:
        return ScannerGone(f"USB scanner {ids} was unplugged; waiting for it to come back")
    if code in (errno.EACCES, errno.EPERM):
        return ScannerUnavailable(
            f"permission denied on USB scanner {ids}: install the udev rule {UDEV_RULE} (`{INSTALL_UDEV_RULE}`), "
            "add the service user to the plugdev group (`sudo usermod -aG plugdev posbridge`), then re-plug the "
            "scanner")
    if code == errno.EBUSY:
        return ScannerUnavailable(
            f"USB scanner {ids} is busy: another program (another posbridge, a browser using WebHID, a POS "
            "driver) or a kernel driver that could not be detached holds it; stop that program")
    if code in (errno.EIO, errno.EOVERFLOW, errno.EPIPE):
        return ScannerGone(f"USB transfer error on scanner {ids} ({exc.strerror or exc}); reopening the device")
    return ScannerGone(f"USB error on scanner {ids}: {exc}; reopening the device")


class HidSource:
    """A :class:`~posbridge.scanners.ScanSource` for one USB HID scanner."""

    def __init__(self, config: HidScanner, *, backend: Any = None) -> None:
        self.name = config.name
        self.config = config
        self._backend = backend
        self._ids = usb_ids(config.vid, config.pid, config.serial_number)
        self._device: usb.core.Device | None = None
        self._endpoint: Any = None
        self._claimed: list[int] = []
        self._detached: list[int] = []
        self._decoder: _Decoder = self._keyboard_decoder()
        self._report_errors: set[str] = set()
        self._unfinished_logged = False

    def _keyboard_decoder(self) -> KeyboardDecoder:
        return KeyboardDecoder(self.config.layout, gap=self.config.idle_gap,
                               oem_code_page=self.config.oem_code_page)

    # open ------------------------------------------------------------------------------------------------------
    def open(self) -> None:
        backend = self._backend if self._backend is not None else libusb_backend()
        if backend is None:
            raise ScannerUnavailable("libusb cannot be loaded, so USB scanners cannot be read; reinstall posbridge "
                                     "(it ships libusb in the libusb-package wheel) or `apt install libusb-1.0-0`")
        try:
            device = self._find(backend)
            self._device = device
            self._setup(device)
        except usb.core.USBError as exc:
            self.close()
            raise map_usb_error(exc, self._ids) from exc
        except BaseException:
            self.close()
            raise
        self._decoder.reset()

    def _find(self, backend: Any) -> usb.core.Device:
        config = self.config
        devices = list(usb.core.find(find_all=True, backend=backend, idVendor=config.vid, idProduct=config.pid))
        if config.serial_number is not None:
            matching = [d for d in devices if self._serial_of(d) == config.serial_number]
            for other in devices:
                if other not in matching:
                    usb.util.dispose_resources(other)  # reading its serial number opened it
            devices = matching
        if not devices:
            same_maker = [usb_ids(d.idVendor, d.idProduct) for d in usb.core.find(
                find_all=True, backend=backend, idVendor=config.vid)]
            also = f" (devices from this maker: {', '.join(same_maker)})" if same_maker else ""
            raise ScannerUnavailable(
                f"no USB device {self._ids} is plugged in{also}; plug the scanner in, and check the ids with "
                "`posbridge scanners list` (a scanner in USB-serial mode is type = \"serial\")")
        return devices[0]

    def _serial_of(self, device: usb.core.Device) -> str | None:
        try:
            return device.serial_number  # type: ignore[no-any-return]
        except ValueError as exc:  # pyusb hides the reason: "The device has no langid (permission issue, ...)"
            usb.util.get_langids(device)  # raises the real USBError (errno 13 without the udev rule)
            raise ScannerUnavailable(f"cannot read the serial number of {self._ids}: {exc}") from exc

    def _setup(self, device: usb.core.Device) -> None:
        try:
            active = device.get_active_configuration()
        except usb.core.USBError as exc:
            if exc.errno in (errno.ENODEV, errno.EACCES, errno.EPERM):
                raise
            active = None  # unconfigured
        hid = [i for i in (active or device[0]) if i.bInterfaceClass == 3 and i.bAlternateSetting == 0]
        if not hid:
            raise ScannerUnavailable(
                f"USB device {self._ids} has no HID interface: it is probably in USB-serial (CDC) mode; configure "
                "it as type = \"serial\", or scan the HID POS programming code (drivers/README.md)")
        for interface in hid:
            number = interface.bInterfaceNumber
            try:
                if device.is_kernel_driver_active(number):
                    device.detach_kernel_driver(number)
                    self._detached.append(number)
            except NotImplementedError:  # platforms without kernel drivers to detach
                pass
        if active is None:
            device.set_configuration()
        for interface in hid:
            usb.util.claim_interface(device, interface.bInterfaceNumber)
            self._claimed.append(interface.bInterfaceNumber)
        chosen, descriptor = self._choose(device, hid)
        self._decoder = self._pos_decoder(descriptor) if self.config.mode == "pos" else self._keyboard_decoder()
        self._endpoint = usb.util.find_descriptor(
            chosen, custom_match=lambda e: usb.util.endpoint_direction(e.bEndpointAddress) == usb.util.ENDPOINT_IN
            and usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_INTR)
        if self._endpoint is None:
            raise ScannerUnavailable(f"USB device {self._ids} has no interrupt IN endpoint to read scans from")
        if self.config.mode == "pos" and device.idVendor == HONEYWELL_VID:
            self._honeywell_output_to_hid(device, chosen.bInterfaceNumber)
        log.debug("scanner %s: reading %s interface %d endpoint 0x%02x (%s mode)", self.name, self._ids,
                  chosen.bInterfaceNumber, self._endpoint.bEndpointAddress, self.config.mode)

    def _pos_decoder(self, descriptor: bytes | None) -> HidPosDecoder:
        """A decoder for the layout the descriptor declares; without a descriptor, the known layouts, logged."""
        gap = self.config.idle_gap
        if not descriptor:
            log.warning("scanner %s: %s gave no report descriptor; decoding its reports by guessing among the known "
                        "layouts (Honeywell, Zebra/Datalogic, Newland)", self.name, self._ids)
            return HidPosDecoder(variant="newland" if self.config.vid == NEWLAND_VID else "auto", gap=gap)
        try:
            decoder = HidPosDecoder.from_descriptor(descriptor, gap=gap)
        except DescriptorError as exc:
            raise ScannerUnavailable(f"USB scanner {self._ids}: {exc}; set the scanner to HID POS mode (drivers/"
                                     "README.md), or set mode = \"keyboard\"") from exc
        assert decoder.layout is not None
        log.debug("scanner %s: scanned-data report %s", self.name, decoder.layout.describe())
        return decoder

    def _choose(self, device: usb.core.Device, hid: list[Any]) -> tuple[Any, bytes | None]:
        """The interface that carries scans in the configured mode, and its report descriptor (None when the
        device would not give it); explains a mode mismatch."""
        descriptors = {i.bInterfaceNumber: self._report_descriptor(device, i.bInterfaceNumber) for i in hid}
        pos = [i for i in hid if descriptors[i.bInterfaceNumber] and is_hid_pos(descriptors[i.bInterfaceNumber])]
        keyboards = [i for i in hid if i.bInterfaceProtocol == 1]
        if self.config.mode == "pos":
            if pos:
                return pos[0], descriptors[pos[0].bInterfaceNumber]
            if keyboards and len(keyboards) == len(hid):
                raise ScannerUnavailable(
                    f"scanner {self._ids} is in keyboard mode but mode = \"pos\" is configured: scan the \"HID "
                    "POS\" programming code from the maker's manual (drivers/README.md), or set mode = "
                    "\"keyboard\" and the scanner's layout")
            chosen = next((i for i in hid if i.bInterfaceProtocol != 1), hid[0])
            return chosen, descriptors[chosen.bInterfaceNumber]
        if keyboards:
            return keyboards[0], None
        if pos and len(pos) == len(hid):
            raise ScannerUnavailable(
                f"scanner {self._ids} is in HID POS mode but mode = \"keyboard\" is configured: set mode = \"pos\" "
                "(better: no layout problems, symbology included)")
        return hid[0], None

    @staticmethod
    def _report_descriptor(device: usb.core.Device, interface: int) -> bytes | None:
        try:
            return bytes(device.ctrl_transfer(0x81, 0x06, 0x2200, interface, 4096, timeout=1000))
        except (usb.core.USBError, NotImplementedError, ValueError):
            return None

    def _honeywell_output_to_hid(self, device: usb.core.Device, interface: int) -> None:
        """Honeywell's feature report 0xFE = 1 routes decoded data to the HID POS reports (as WebHID does)."""
        try:
            device.ctrl_transfer(0x21, 0x09, 0x03FE, interface, bytes([0xFE, 0x01]), timeout=1000)
        except (usb.core.USBError, NotImplementedError) as exc:
            log.debug("scanner %s: output redirection feature report refused (%s)", self.name, exc)

    # read ------------------------------------------------------------------------------------------------------
    def read(self) -> list[ScanEvent]:
        device, endpoint = self._device, self._endpoint
        if device is None or endpoint is None:
            raise ScannerGone("USB scanner is not open")
        decoder = self._decoder
        deadline = time.monotonic() + self.config.read_timeout
        while True:
            now = time.monotonic()
            wait = deadline - now
            left = decoder.time_left(now)
            if left is not None:
                wait = min(wait, left)
            try:
                report = bytes(device.read(endpoint.bEndpointAddress, endpoint.wMaxPacketSize,
                                           timeout=max(1, int(wait * 1000))))
            except usb.core.USBTimeoutError:
                report = None
            except usb.core.USBError as exc:
                if exc.errno == errno.ETIMEDOUT:
                    report = None
                else:
                    decoder.reset()  # a half-received code is lost with the device
                    raise map_usb_error(exc, self._ids) from exc
            now = time.monotonic()
            scans = self._decode(report, now) if report is not None else []
            scans += decoder.expire(now)
            if scans:
                return [self._event(s) for s in scans]
            if now >= deadline:
                return []

    def _event(self, scan: DecodedScan) -> ScanEvent:
        if scan.unfinished and self.config.mode == "pos":
            level = logging.INFO if self._unfinished_logged else logging.WARNING  # said loudly once per source
            self._unfinished_logged = True
            log.log(level, "scanner %s: a code of %d bytes never got its last report (the continued flag was still "
                        "set); ended it after %.0f ms without a report and passed it on to be checked", self.name,
                        len(scan.data), self.config.idle_gap * 1000)
        return ScanEvent(text=scan.text, raw=scan.raw, symbology=scan.symbology, source=self.name, aim=scan.aim)

    def _decode(self, report: bytes, now: float) -> list[DecodedScan]:
        try:
            return self._decoder.feed(report, now)
        except ReportError as exc:
            reason = str(exc)
            level = logging.DEBUG if reason in self._report_errors else logging.WARNING
            self._report_errors.add(reason)
            log.log(level, "scanner %s: ignored a report that makes no sense (%s); report: %s", self.name, reason,
                    report.hex(" "))
            return []

    # close -----------------------------------------------------------------------------------------------------
    def close(self) -> None:
        device, self._device, self._endpoint = self._device, None, None
        claimed, self._claimed = self._claimed, []
        detached, self._detached = self._detached, []
        if device is None:
            return
        for number in claimed:
            try:
                usb.util.release_interface(device, number)
            except (usb.core.USBError, ValueError):
                pass
        for number in detached:
            try:
                device.attach_kernel_driver(number)  # the scanner types into the desktop again
            except (usb.core.USBError, NotImplementedError, ValueError):
                pass
        try:
            usb.util.dispose_resources(device)
        except (usb.core.USBError, ValueError):
            pass
