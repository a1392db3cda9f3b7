"""A pyusb backend that simulates USB barcode scanners at the USB level.

The driver under test runs unchanged: ``usb.core.find(backend=SimBackend(...))`` returns real ``usb.core.Device``
objects built from the descriptors below, and every call pyusb makes (open, kernel-driver checks, set/get
configuration, claim/release, interrupt reads, GET_DESCRIPTOR control transfers) lands here and behaves as
libusb does on Linux, errors included:

* reads wait for queued reports and raise ``USBTimeoutError`` (errno 110) when none comes in time;
* after :meth:`SimDevice.unplug`, every call on an old handle raises ``USBError`` errno 19, like libusb;
  :meth:`SimDevice.replug` brings the device back at a new address with ``usbhid`` bound again;
* ``access_denied`` makes opening fail with errno 13 (no udev rule); claiming an interface that the kernel
  driver or another program holds fails with errno 16.

The report builders produce what the scanner firmware sends (``shared/reference/scanners.md``).
"""

from __future__ import annotations

import array
import errno
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core

from posbridge import layouts

HONEYWELL_VID, NEWLAND_VID, ZEBRA_VID = 0x0C2E, 0x1EAB, 0x05E0

# Honeywell-style HID POS descriptor: report 2 = byte count, AIM (3), 56 data bytes, Code ID, reserved, 8 flags
HONEYWELL_POS_DESCRIPTOR = bytes.fromhex(
    "058c 0902 a101 8502 0912 a102"          # Bar Code Scanner application, report 2, Scanned Data Report
    "0501 093b 1500 26ff00 7508 9501 8102"   # Generic Desktop Byte Count, 1 byte
    "058c 09fb 09fc 09fd 9503 8102"          # Symbology Identifier 1-3 (the AIM ID)
    "09fe 9538 820201"                       # Decoded Data, 56 bytes, buffered
    "0666ff 0901 9501 8102"                  # vendor page 0xFF66: Code ID
    "0902 9501 8102"                         # reserved
    "058c 09ff 7501 9508 8102"               # Decode Data Continued and 7 more one-bit fields
    "c0c0")
# Newland-style: byte count, 56 data bytes, 4 reserved, symbology id, 8 flags; no AIM field
NEWLAND_POS_DESCRIPTOR = bytes.fromhex(
    "058c 0902 a101 8502 0912 a102"
    "0501 093b 1500 26ff00 7508 9501 8102"
    "058c 09fe 9538 820201"
    "06ffff 0901 9505 8102"
    "058c 09ff 7501 9508 8102"
    "c0c0")
# Zebra-style HID POS (also Datalogic): one constant byte before the AIM ID, 55 data bytes, and the continued
# flag in bit 1 of the last byte after a Good Read Beep bit: only the descriptor says where each field is.
ZEBRA_POS_DESCRIPTOR = bytes.fromhex(
    "058c 0902 a101 8502 0912 a102"
    "0501 093b 1500 26ff00 7508 9501 8102"   # Byte Count
    "9501 8101"                              # one constant byte
    "058c 09fb 09fc 09fd 9503 8102"          # Symbology Identifier 1-3
    "09fe 9537 820201"                       # Decoded Data, 55 bytes
    "9502 8101"                              # two constant bytes
    "0986 09ff 7501 9502 8102"               # Sound Good Read Beep, Decode Data Continued (bit 1)
    "9506 8101"                              # 6 constant bits
    "c0c0")
# The boot keyboard descriptor of the HID specification (appendix B.1)
BOOT_KEYBOARD_DESCRIPTOR = bytes.fromhex(
    "05010906a101050719e029e71500250175019508810295017508810195057501050819012905910295017503910195067508"
    "15002565050719002965" "8100c0")


@dataclass
class SimInterface:
    """One HID interface with one interrupt IN endpoint."""

    number: int
    report_descriptor: bytes
    protocol: int = 0  # 1 = boot keyboard
    max_packet: int = 64
    endpoint: int = 0x81
    kernel_driver: bool = True  # usbhid binds every HID interface at plug-in


@dataclass
class SimDevice:
    """A device on the simulated bus. Tests drive it: :meth:`send`, :meth:`unplug`, :meth:`replug`."""

    vid: int
    pid: int
    interfaces: list[SimInterface]
    serial: str = ""
    manufacturer: str = "Simulated"
    product: str = "Scanner"
    access_denied: bool = False
    configuration: int = 1  # the kernel configures a device when it enumerates it
    address: int = 5
    plugged: bool = True
    generation: int = 0
    claimed: set[int] = field(default_factory=set)
    held_by_other: set[int] = field(default_factory=set)
    set_configuration_calls: int = 0
    _queue: deque[bytes | BaseException] = field(default_factory=deque)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def send(self, *reports: bytes) -> None:
        """Queue interrupt-IN reports, as the firmware does after decoding a code."""
        with self._cond:
            self._queue.extend(bytes(r) for r in reports)
            self._cond.notify_all()

    def fail_next_read(self, code: int) -> None:
        """The next interrupt read fails with this errno (5 EIO, 75 EOVERFLOW...)."""
        with self._cond:
            self._queue.append(usb.core.USBError(f"simulated error {code}", -1, code))
            self._cond.notify_all()

    def wait_drained(self, timeout: float = 5.0) -> None:
        """Block until the host has read every queued report."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError("the host did not read the queued reports")

    def unplug(self) -> None:
        """Pull the cable: queued reports are lost, old handles fail with errno 19."""
        with self._cond:
            self.plugged = False
            self._queue.clear()
            self.claimed.clear()
            self._cond.notify_all()

    def replug(self) -> None:
        """Plug it back: a new address, configured by the kernel, usbhid bound to every interface again."""
        with self._cond:
            self.generation += 1
            self.address += 1
            self.configuration = 1
            for interface in self.interfaces:
                interface.kernel_driver = True
            self.plugged = True
            self._cond.notify_all()

    def interface(self, number: int) -> SimInterface:
        for interface in self.interfaces:
            if interface.number == number:
                return interface
        raise usb.core.USBError("Entity not found", -5, errno.ENOENT)

    def strings(self) -> dict[int, str]:
        return {1: self.manufacturer, 2: self.product, 3: self.serial}


@dataclass
class _Handle:
    device: SimDevice
    generation: int


def _error(code: int, text: str) -> usb.core.USBError:
    return usb.core.USBError(text, -1, code)


class SimBackend(usb.backend.IBackend):  # type: ignore[misc]
    """The simulated bus. Pass it as ``backend=`` wherever the driver takes a pyusb backend."""

    def __init__(self, *devices: SimDevice) -> None:
        super().__init__()
        self.devices = list(devices)

    def plug(self, device: SimDevice) -> None:
        self.devices.append(device)

    # descriptors -------------------------------------------------------------------------------------------------
    def enumerate_devices(self) -> list[SimDevice]:
        return [d for d in self.devices if d.plugged]

    def get_parent(self, dev: SimDevice) -> None:
        return None

    def get_device_descriptor(self, dev: SimDevice) -> SimpleNamespace:
        return SimpleNamespace(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0, bDeviceProtocol=0,
            bMaxPacketSize0=64, idVendor=dev.vid, idProduct=dev.pid, bcdDevice=0x0100, iManufacturer=1,
            iProduct=2, iSerialNumber=3 if dev.serial else 0, bNumConfigurations=1, address=dev.address, bus=1,
            port_number=2, port_numbers=(2,), speed=2)

    def get_configuration_descriptor(self, dev: SimDevice, config: int) -> SimpleNamespace:
        if config != 0:
            raise IndexError(f"Invalid configuration index {config}")
        return SimpleNamespace(
            bLength=9, bDescriptorType=2, wTotalLength=9 + 25 * len(dev.interfaces),
            bNumInterfaces=len(dev.interfaces), bConfigurationValue=1, iConfiguration=0, bmAttributes=0x80,
            bMaxPower=250, extra_descriptors=[])

    def get_interface_descriptor(self, dev: SimDevice, intf: int, alt: int, config: int) -> SimpleNamespace:
        if intf >= len(dev.interfaces):
            raise IndexError(f"Invalid interface index {intf}")
        if alt != 0:
            raise IndexError(f"Invalid alternate setting index {alt}")
        interface = dev.interfaces[intf]
        size = len(interface.report_descriptor)
        hid_descriptor = [9, 0x21, 0x11, 0x01, 0, 1, 0x22, size & 0xFF, size >> 8]
        return SimpleNamespace(
            bLength=9, bDescriptorType=4, bInterfaceNumber=interface.number, bAlternateSetting=0, bNumEndpoints=1,
            bInterfaceClass=3, bInterfaceSubClass=1 if interface.protocol else 0,
            bInterfaceProtocol=interface.protocol, iInterface=0, extra_descriptors=hid_descriptor)

    def get_endpoint_descriptor(self, dev: SimDevice, ep: int, intf: int, alt: int, config: int) -> SimpleNamespace:
        if ep != 0:
            raise IndexError(f"Invalid endpoint index {ep}")
        interface = dev.interfaces[intf]
        return SimpleNamespace(
            bLength=7, bDescriptorType=5, bEndpointAddress=interface.endpoint, bmAttributes=0x03,
            wMaxPacketSize=interface.max_packet, bInterval=1, bRefresh=0, bSynchAddress=0, extra_descriptors=[])

    # device handles ----------------------------------------------------------------------------------------------
    def _live(self, handle: _Handle) -> SimDevice:
        device = handle.device
        if not device.plugged or handle.generation != device.generation:
            raise _error(errno.ENODEV, "No such device (it may have been disconnected)")
        return device

    def open_device(self, dev: SimDevice) -> _Handle:
        if not dev.plugged:
            raise _error(errno.ENODEV, "No such device (it may have been disconnected)")
        if dev.access_denied:
            raise _error(errno.EACCES, "Access denied (insufficient permissions)")
        return _Handle(dev, dev.generation)

    def close_device(self, dev_handle: _Handle) -> None:
        pass

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        device = self._live(dev_handle)
        if any(i.kernel_driver for i in device.interfaces) or device.held_by_other:
            raise _error(errno.EBUSY, "Resource busy")
        device.configuration = config_value
        device.set_configuration_calls += 1

    def get_configuration(self, dev_handle: _Handle) -> int:
        return self._live(dev_handle).configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self._live(dev_handle)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        device = self._live(dev_handle)
        if device.interface(intf).kernel_driver or intf in device.held_by_other:
            raise _error(errno.EBUSY, "Resource busy")
        device.claimed.add(intf)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        self._live(dev_handle).claimed.discard(intf)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return self._live(dev_handle).interface(intf).kernel_driver

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        interface = self._live(dev_handle).interface(intf)
        if not interface.kernel_driver:
            raise _error(errno.ENOENT, "Entity not found")
        interface.kernel_driver = False

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        device = self._live(dev_handle)
        if intf in device.claimed:
            raise _error(errno.EBUSY, "Resource busy")
        device.interface(intf).kernel_driver = True

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self._live(dev_handle)

    def reset_device(self, dev_handle: _Handle) -> None:
        self._live(dev_handle)

    # transfers ---------------------------------------------------------------------------------------------------
    def intr_read(self, dev_handle: _Handle, ep: int, intf: int, buff: array.array, timeout: int) -> int:
        device = self._live(dev_handle)
        if intf not in device.claimed:
            raise _error(errno.EBUSY, "Resource busy")  # libusb refuses I/O on an unclaimed interface
        deadline = time.monotonic() + (timeout or 1000) / 1000
        with device._cond:
            while not device._queue:
                self._live(dev_handle)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT)
                device._cond.wait(left)
            self._live(dev_handle)
            item = device._queue.popleft()
            device._cond.notify_all()
        if isinstance(item, BaseException):
            raise item
        if len(item) > len(buff) * buff.itemsize:
            raise _error(errno.EOVERFLOW, "Overflow")
        buff[:len(item)] = array.array("B", item)
        return len(item)

    def intr_write(self, dev_handle: _Handle, ep: int, intf: int, data: array.array, timeout: int) -> int:
        self._live(dev_handle)
        return len(data)

    def ctrl_transfer(self, dev_handle: _Handle, bmRequestType: int, bRequest: int, wValue: int, wIndex: int,
                      data: array.array, timeout: int) -> int:
        device = self._live(dev_handle)
        if bmRequestType & 0x80 == 0:  # host to device: SET_REPORT, SET_IDLE... accepted
            return len(data)
        if bRequest != 0x06:
            raise _error(errno.EPIPE, "Pipe error")
        kind, index = wValue >> 8, wValue & 0xFF
        if kind == 0x03:
            if index == 0:
                payload = bytes([4, 3, 0x09, 0x04])  # LANGID en-US
            elif device.strings().get(index):
                text = device.strings()[index].encode("utf-16-le")
                payload = bytes([2 + len(text), 3]) + text
            else:
                raise _error(errno.EPIPE, "Pipe error")
        elif kind == 0x22 and bmRequestType == 0x81:
            payload = device.interface(wIndex).report_descriptor
        else:
            raise _error(errno.EPIPE, "Pipe error")
        size = min(len(payload), len(data) * data.itemsize)
        data[:size] = array.array("B", payload[:size])
        return size


# devices -------------------------------------------------------------------------------------------------------
def honeywell_pos(serial: str = "17300B1234", pid: int = 0x0B8F) -> SimDevice:
    """A Honeywell imager in HID POS mode (one 64-byte HID POS interface)."""
    return SimDevice(HONEYWELL_VID, pid, [SimInterface(0, HONEYWELL_POS_DESCRIPTOR)], serial=serial,
                     manufacturer="Honeywell Imaging & Mobility", product="1400g")


def newland_pos(serial: str = "NLS0001", pid: int = 0x0D10) -> SimDevice:
    """A Newland FM420 in HID POS mode."""
    return SimDevice(NEWLAND_VID, pid, [SimInterface(0, NEWLAND_POS_DESCRIPTOR)], serial=serial,
                     manufacturer="Newland", product="FM420")


def zebra_pos(serial: str = "ZB0001", pid: int = 0x1900) -> SimDevice:
    """A Zebra/Datalogic-style imager in HID POS mode (:data:`ZEBRA_POS_DESCRIPTOR`)."""
    return SimDevice(ZEBRA_VID, pid, [SimInterface(0, ZEBRA_POS_DESCRIPTOR)], serial=serial,
                     manufacturer="Zebra Technologies", product="DS2208")


def keyboard_scanner(vid: int = ZEBRA_VID, pid: int = 0x1200, serial: str = "KB0001") -> SimDevice:
    """A scanner in its factory mode: a USB boot keyboard (8-byte reports)."""
    return SimDevice(vid, pid, [SimInterface(0, BOOT_KEYBOARD_DESCRIPTOR, protocol=1, max_packet=8)],
                     serial=serial, manufacturer="Symbol", product="Bar Code Scanner")


# reports -------------------------------------------------------------------------------------------------------
def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def honeywell_reports(text: str | bytes, aim: str = "]Q1", code_id: str = "s", shifted: bool = False) -> list[bytes]:
    """Report-2 sequence of a Honeywell-layout scanner; ``shifted`` adds the vendor byte before the AIM ID."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    size = 55 if shifted else 56
    pieces = _chunks(data, size)
    reports = []
    for number, piece in enumerate(pieces):
        report = bytearray(64)
        report[0], report[1] = 0x02, len(piece)
        start = 3 if shifted else 2
        report[start:start + 3] = aim.encode("latin-1")
        report[start + 3:start + 3 + len(piece)] = piece
        if not shifted:
            report[61] = ord(code_id)
        report[63] = 1 if number < len(pieces) - 1 else 0
        reports.append(bytes(report))
    return reports


def newland_reports(text: str | bytes, symbology: int = 0x51) -> list[bytes]:
    """Report-2 sequence of a Newland scanner: data from byte 2, symbology id at 62, no AIM field."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    pieces = _chunks(data, 56)
    reports = []
    for number, piece in enumerate(pieces):
        report = bytearray(64)
        report[0], report[1] = 0x02, len(piece)
        report[2:2 + len(piece)] = piece
        report[62] = symbology
        report[63] = 1 if number < len(pieces) - 1 else 0
        reports.append(bytes(report))
    return reports


def zebra_reports(text: str | bytes, aim: str = "]Q1", *, last_flag: bool = True) -> list[bytes]:
    """Report-2 sequence of the Zebra-style descriptor: count at 1, AIM at 3-5, 55 data bytes from 6, continued
    flag at byte 63 bit 1 (bit 0: good-read beep, set). ``last_flag=False``: the firmware bug of a code whose
    closing report never comes (the last report keeps the continued flag)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    pieces = _chunks(data, 55)
    reports = []
    for number, piece in enumerate(pieces):
        report = bytearray(64)
        report[0], report[1], report[2] = 0x02, len(piece), 0x00
        report[3:6] = aim.encode("latin-1")
        report[6:6 + len(piece)] = piece
        more = number < len(pieces) - 1 or not last_flag
        report[63] = 0x01 | (0x02 if more else 0)
        reports.append(bytes(report))
    return reports


def alt_code_reports(text: str, oem_code_page: int = 850, *, suffix: int | None = 0x28) -> list[bytes]:
    """What a scanner in "ALT mode" sends: per character, left Alt held, its keypad digits pressed and released
    one by one, then Alt released (:func:`posbridge.layouts.alt_code_digits`)."""
    alt, release = layouts.LEFT_ALT, bytes(8)
    reports = []
    for char in text:
        digits = layouts.alt_code_digits(char, oem_code_page)
        if digits is None:
            raise ValueError(f"no Alt code types {char!r}")
        reports.append(bytes([alt, 0, 0, 0, 0, 0, 0, 0]))
        for digit in digits:
            reports += [bytes([alt, 0, layouts.KEYPAD_DIGITS[digit], 0, 0, 0, 0, 0]), bytes([alt, 0, 0, 0, 0, 0, 0, 0])]
        reports.append(release)
    if suffix is not None:
        reports += [bytes([0, 0, suffix, 0, 0, 0, 0, 0]), release]
    return reports


def chord(modifiers: int, usage: int) -> list[bytes]:
    """One key chord in its own report (Ctrl+J: ``chord(LEFT_CTRL, 0x0D)``), then the release."""
    return [bytes([modifiers, 0, usage, 0, 0, 0, 0, 0]), bytes(8)]


def keyboard_reports(text: str, layout: str, *, suffix: int | None = 0x28, shift_first: bool = False) -> list[bytes]:
    """What a keyboard-wedge scanner set to ``layout`` sends to type ``text``: press and release per character."""
    release = bytes(8)
    reports = []
    for char in text:
        keys = layouts.keys_for(layout, char)
        if keys is None:
            raise ValueError(f"a scanner set to {layout!r} cannot type {char!r}")
        usage, modifiers = keys
        if shift_first and modifiers:
            reports.append(bytes([modifiers, 0, 0, 0, 0, 0, 0, 0]))
        reports += [bytes([modifiers, 0, usage, 0, 0, 0, 0, 0]), release]
    if suffix is not None:
        reports += [bytes([0, 0, suffix, 0, 0, 0, 0, 0]), release]
    return reports


def as_dict(device: SimDevice) -> dict[str, Any]:
    """A short description for assertion messages."""
    return {"vid": hex(device.vid), "pid": hex(device.pid), "plugged": device.plugged,
            "claimed": sorted(device.claimed), "drivers": [i.kernel_driver for i in device.interfaces]}
