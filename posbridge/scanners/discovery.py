"""What input devices this machine has: ``posbridge scanners list``.

For the technician configuring a till: USB devices with HID interfaces (scanners in HID POS or keyboard mode,
and the till's own keyboard and mouse, so nothing is hidden), serial ports with their USB ids, and cameras.
Every section says "none found" honestly when empty, with the likely reason. Nothing here writes to a device or
claims it: descriptors are read from sysfs or from libusb's cache, never by detaching a driver.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import serial.tools.list_ports

from posbridge.scanners.hiddescriptor import is_hid_pos

KNOWN_MAKERS = {0x0C2E: "Honeywell", 0x05E0: "Zebra/Symbol", 0x05F9: "Datalogic", 0x1EAB: "Newland",
                0x067E: "Intermec"}
SYS_USB = Path("/sys/bus/usb/devices")


@dataclass
class HidInterface:
    """``kind``: hid-pos, keyboard, mouse or hid; ``evidence``: how that was decided."""

    number: int
    kind: str
    evidence: str


@dataclass
class UsbHidDevice:
    vid: str
    pid: str
    bus: int | None
    port_path: str | None
    maker: str | None
    manufacturer: str | None
    product: str | None
    serial_number: str | None
    interfaces: list[HidInterface] = field(default_factory=list)

    @property
    def likely_scanner(self) -> bool:
        return self.maker is not None or any(i.kind == "hid-pos" for i in self.interfaces)

    def config_hint(self) -> str:
        mode = "pos" if any(i.kind == "hid-pos" for i in self.interfaces) else "keyboard"
        serial = f', serial_number = "{self.serial_number}"' if self.serial_number else ""
        hint = f'type = "hid", vid = "{self.vid}", pid = "{self.pid}"{serial}, mode = "{mode}"'
        return hint + (', layout = "us"  # the layout the scanner is set to' if mode == "keyboard" else "")


@dataclass
class SerialPort:
    device: str
    by_id: list[str]
    vid: str | None
    pid: str | None
    serial_number: str | None
    description: str | None
    maker: str | None


@dataclass
class VideoDevice:
    device: str
    name: str | None
    by_id: list[str]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip() or None
    except OSError:
        return None


def _links_to(pattern: str, device: str) -> list[str]:
    """Symlinks matching ``pattern`` that point at ``device`` (stable names under /dev/serial/by-id, /dev/v4l)."""
    real = os.path.realpath(device)
    return sorted(p for p in glob.glob(pattern) if os.path.realpath(p) == real)


def _interface_kind(device: Any, interface: Any, sysfs: Path | None) -> HidInterface:
    number = interface.bInterfaceNumber
    descriptor = None
    if sysfs is not None:
        for candidate in sorted(glob.glob(f"{sysfs}:*.{number}/*/report_descriptor")):
            try:
                descriptor = Path(candidate).read_bytes()
            except OSError:
                pass
            break
    if descriptor:
        if is_hid_pos(descriptor):
            return HidInterface(number, "hid-pos", "report descriptor has the Bar Code Scanner page 0x8C")
    if interface.bInterfaceProtocol == 1:
        return HidInterface(number, "keyboard", "boot keyboard interface")
    if interface.bInterfaceProtocol == 2:
        return HidInterface(number, "mouse", "boot mouse interface")
    if descriptor:
        return HidInterface(number, "hid", "report descriptor without the Bar Code Scanner page")
    if device.idVendor in KNOWN_MAKERS:
        return HidInterface(number, "hid-pos", "probably: a scanner maker's non-keyboard HID interface "
                            "(report descriptor not readable)")
    return HidInterface(number, "hid", "report descriptor not readable")


def _string(device: Any, sysfs: Path | None, sys_name: str, attribute: str) -> str | None:
    if sysfs is not None:
        value = _read(sysfs / sys_name)
        if value:
            return value
    try:
        return getattr(device, attribute)  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - strings need the device opened: permissions, unplugged... just omit them
        return None


def list_usb(backend: Any = None) -> tuple[list[UsbHidDevice], str | None]:
    """USB devices with at least one HID interface, and an error text when USB could not be enumerated."""
    import usb.core
    import usb.util

    from posbridge.scanners import hid

    try:
        backend = backend if backend is not None else hid.libusb_backend()
        if backend is None:
            return [], "libusb cannot be loaded (reinstall posbridge, or `apt install libusb-1.0-0`)"
        devices = list(usb.core.find(find_all=True, backend=backend))
    except Exception as exc:  # noqa: BLE001
        return [], f"USB devices cannot be listed: {exc}"
    found = []
    for device in devices:
        try:
            interfaces = [i for i in device[0] if i.bInterfaceClass == 3 and i.bAlternateSetting == 0]
        except Exception:  # noqa: BLE001 - a device that vanished while listing
            continue
        if not interfaces:
            continue
        ports = getattr(device, "port_numbers", None)
        port_path = f"{device.bus}-{'.'.join(str(p) for p in ports)}" if device.bus is not None and ports else None
        sysfs = SYS_USB / port_path if port_path and (SYS_USB / port_path).is_dir() else None
        found.append(UsbHidDevice(
            vid=f"{device.idVendor:04x}", pid=f"{device.idProduct:04x}", bus=device.bus, port_path=port_path,
            maker=KNOWN_MAKERS.get(device.idVendor),
            manufacturer=_string(device, sysfs, "manufacturer", "manufacturer"),
            product=_string(device, sysfs, "product", "product"),
            serial_number=_string(device, sysfs, "serial", "serial_number"),
            interfaces=[_interface_kind(device, i, sysfs) for i in interfaces]))
        try:
            usb.util.dispose_resources(device)
        except Exception:  # noqa: BLE001
            pass
    return found, None


def list_serial(comports: Callable[[], list[Any]] = serial.tools.list_ports.comports) -> list[SerialPort]:
    """Serial ports pyserial sees, with USB ids and /dev/serial/by-id names where there are some."""
    ports = []
    for port in sorted(comports(), key=lambda p: p.device):
        ports.append(SerialPort(
            device=port.device, by_id=_links_to("/dev/serial/by-id/*", port.device),
            vid=f"{port.vid:04x}" if port.vid is not None else None,
            pid=f"{port.pid:04x}" if port.pid is not None else None,
            serial_number=port.serial_number,
            description=port.description if port.description not in (None, "n/a") else None,
            maker=KNOWN_MAKERS.get(port.vid) if port.vid is not None else None))
    return ports


def list_video(dev: str = "/dev") -> list[VideoDevice]:
    """V4L2 devices (/dev/video*) with their kernel name and /dev/v4l/by-id names."""
    videos = []
    for node in sorted(glob.glob(f"{dev}/video*"), key=lambda p: (len(p), p)):
        name = _read(Path("/sys/class/video4linux") / os.path.basename(node) / "name")
        videos.append(VideoDevice(node, name, _links_to(f"{dev}/v4l/by-id/*", node)))
    return videos


def discover(backend: Any = None, comports: Callable[[], list[Any]] = serial.tools.list_ports.comports,
             dev: str = "/dev") -> dict[str, Any]:
    """Everything ``scanners list`` shows, JSON-ready; ``notes`` holds the "none found" explanations."""
    usb_devices, usb_error = list_usb(backend)
    serial_ports = list_serial(comports)
    videos = list_video(dev)
    notes = []
    if usb_error:
        notes.append(usb_error)
    elif not usb_devices:
        notes.append("no USB HID devices found (no scanner in HID POS or keyboard mode is plugged in, or this "
                     "machine gives no access to USB: a container without /dev/bus/usb)")
    if not any(p.vid for p in serial_ports):
        notes.append("no USB serial ports found (scanners in USB-serial/CDC mode appear as /dev/ttyACM*)")
    if not videos:
        notes.append("no video devices found (no /dev/video*)")
    return {
        "usb": [dict(asdict(d), likely_scanner=d.likely_scanner, config=d.config_hint()) for d in usb_devices],
        "serial": [asdict(p) for p in serial_ports],
        "video": [asdict(v) for v in videos],
        "notes": notes,
    }


def format_report(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`discover`'s result."""
    lines = ["USB HID devices:"]
    for device in report["usb"]:
        label = " ".join(x for x in (device["manufacturer"], device["product"]) if x) or "(no name)"
        maker = f" [{device['maker']} scanner maker]" if device["maker"] else ""
        serial = f" serial {device['serial_number']}" if device["serial_number"] else ""
        lines.append(f"  {device['vid']}:{device['pid']} {label}{serial}{maker}")
        for interface in device["interfaces"]:
            lines.append(f"    interface {interface['number']}: {interface['kind']} ({interface['evidence']})")
        if device["likely_scanner"]:
            lines.append(f"    config: {device['config']}")
    if not report["usb"]:
        lines.append("  none found")
    lines.append("Serial ports:")
    for port in report["serial"]:
        ids = f" {port['vid']}:{port['pid']}" if port["vid"] else " (built-in or RS-232 adapter without USB ids)"
        extra = "".join(f" {x}" for x in (port["description"], port["serial_number"] and
                                           f"serial {port['serial_number']}") if x)
        lines.append(f"  {port['device']}{ids}{extra}")
        lines += [f"    stable path: {link}" for link in port["by_id"]]
    if not report["serial"]:
        lines.append("  none found")
    lines.append("Video devices:")
    for video in report["video"]:
        lines.append(f"  {video['device']} {video['name'] or ''}".rstrip())
        lines += [f"    stable path: {link}" for link in video["by_id"]]
    if not report["video"]:
        lines.append("  none found")
    lines += [f"Note: {note}" for note in report["notes"]]
    return "\n".join(lines)
