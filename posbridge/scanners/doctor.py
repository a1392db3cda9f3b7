"""Doctor's checks for scanners: each configured scanner present and readable, and ModemManager kept away.

A permission problem names the group and the udev rule in ``drivers/`` that fix it. Nothing is opened for
longer than a look: serial ports and cameras are only stat()ed and access()ed, USB devices only asked for their
language ids (which is what fails with errno 13 when the udev rule is missing).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from posbridge.checks import Check
from posbridge.config import CameraScanner, HidScanner, SerialScanner, Settings, StdinScanner
from posbridge.redaction import redact
from posbridge.scanners import INSTALL_UDEV_RULE as INSTALL_RULE
from posbridge.scanners import UDEV_RULE

RULES_DIR = Path("/etc/udev/rules.d")
PROC = Path("/proc")


def _device_access(name: str, path: str, group: str, how: str) -> Check | None:
    """A failed check when ``path`` is missing or not readable and writable by this user, else None."""
    if not os.path.exists(path):
        return Check(name, "fail", f"{path} does not exist", "plug the device in and check the path with "
                     "`posbridge scanners list` (the /dev/serial/by-id/ and /dev/v4l/by-id/ names survive re-plugging)")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check(name, "fail", f"permission denied on {path} for this user (uid {os.getuid()})",
                     f"add the service user to the {group} group ({how}) or install the udev rule {UDEV_RULE}: "
                     f"{INSTALL_RULE}")
    return None


def _name(config: Any) -> str:
    return f"scanner {config.name}"


def check_serial(config: SerialScanner, **_: Any) -> Check:
    """The port (by path, or found by USB ids) exists and this user may open it."""
    name = _name(config)
    port = config.port
    if config.vid is not None:
        import serial.tools.list_ports

        from posbridge.scanners.serial import find_port

        port = find_port(serial.tools.list_ports.comports(), config.vid, config.pid, config.serial_number)
        if port is None:
            ids = f"{config.vid:04x}:{config.pid:04x}" if config.pid is not None else f"{config.vid:04x}:*"
            return Check(name, "fail", f"no serial port with USB id {ids} is plugged in",
                         "plug the scanner in, set it to USB-serial (CDC) mode (drivers/README.md), and check with "
                         "`posbridge scanners list`")
    assert port is not None
    problem = _device_access(name, port, "dialout", "sudo usermod -aG dialout posbridge; SupplementaryGroups=dialout")
    return problem or Check(name, "ok", f"serial port {port} is present and readable")


def check_hid(config: HidScanner, *, usb_backend: Any = None, **_: Any) -> Check:
    """Found by vid/pid through pyusb, then opened (asking its language ids): errno 13 means no udev rule.

    ``usb_backend``: the pyusb backend to search (default: libusb from the libusb-package wheel)."""
    import usb.core
    import usb.util

    from posbridge.scanners import hid

    name = _name(config)
    ids = hid.usb_ids(config.vid, config.pid, config.serial_number)
    try:
        backend = usb_backend if usb_backend is not None else hid.libusb_backend()
        if backend is None:
            raise usb.core.NoBackendError("no libusb backend")
        devices = list(usb.core.find(find_all=True, backend=backend, idVendor=config.vid, idProduct=config.pid))
    except (usb.core.USBError, usb.core.NoBackendError, OSError, ImportError) as exc:
        return Check(name, "fail", f"USB cannot be searched: {exc}",
                     "reinstall posbridge (it ships libusb in the libusb-package wheel) or apt install libusb-1.0-0")
    for device in devices:
        try:
            usb.util.get_langids(device)
            if config.serial_number is None or device.serial_number == config.serial_number:
                return Check(name, "ok", f"USB scanner {ids} is present and readable")
        except (usb.core.USBError, ValueError) as exc:
            if getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
                return Check(name, "fail", f"permission denied on USB scanner {ids}",
                             f"install the udev rule {UDEV_RULE} ({INSTALL_RULE}) and add the service user to the "
                             "plugdev group (sudo usermod -aG plugdev posbridge)")
            return Check(name, "fail", f"USB scanner {ids} cannot be opened: {exc}",
                         "re-plug it; if another program holds it, stop that program")
        finally:
            usb.util.dispose_resources(device)
    return Check(name, "fail", f"no USB device {ids} is plugged in",
                 "plug the scanner in and check its ids with `posbridge scanners list`")


def check_camera(config: CameraScanner, **_: Any) -> Check:
    """The decoder can serve the formats; the device, file or image directory is there and readable."""
    name = _name(config)
    try:
        from posbridge.scanners.camera import classify_source
        from posbridge.scanners.decoders import check_decoder
    except ImportError as exc:
        return Check(name, "fail", f"camera support cannot be imported ({exc})",
                     "reinstall posbridge with its dependencies (opencv-python-headless, zxing-cpp)")
    kind, target = classify_source(config.source)
    problems = check_decoder(config)
    if problems:
        return Check(name, "fail", "; ".join(problems), "change decoder or formats as the message says, or "
                     "install the missing library")
    if kind == "device":
        path = f"/dev/video{target}" if isinstance(target, int) else str(target)
        problem = _device_access(name, path, "video", "sudo usermod -aG video posbridge; SupplementaryGroups=video")
        return problem or Check(name, "ok", f"camera {path} is present and readable; decoder {config.decoder}")
    if kind == "stream":
        return Check(name, "ok", f"network stream {redact(str(target))} (not opened by doctor); "
                     f"decoder {config.decoder}")
    path = str(target) if kind == "file" else os.path.dirname(str(target)) or "."
    if not os.path.exists(path) or not os.access(path, os.R_OK):
        return Check(name, "fail", f"{path} does not exist or cannot be read",
                     "fix source: a camera (0, /dev/video0, /dev/v4l/by-id/...), a video file or frames/%03d.png")
    return Check(name, "ok", f"{kind} {target} is readable; decoder {config.decoder}")


def check_stdin(config: StdinScanner, **_: Any) -> Check:
    """Nothing to check: standard input is always there (under systemd it is /dev/null, read once)."""
    return Check(_name(config), "ok", "reads the terminal (standard input)")


def check_scanner(config: Any, *, usb_backend: Any = None) -> Check:
    """One configured scanner: present and readable by this user, by the check its settings class names
    (``doctor_check`` in :data:`posbridge.config.SCANNER_TYPES`; drivers are imported only when needed).
    ``usb_backend``: the pyusb backend for USB scanners, like ``HidSource(backend=)`` (default: libusb)."""
    name = _name(config)
    if not config.enabled:
        return Check(name, "ok", "disabled in the configuration (enabled = false)")
    try:
        from posbridge.scanners.manager import load

        check = load(type(config).doctor_check, f"the {config.type} scanner check")
        result: Check = check(config, usb_backend=usb_backend)
        return result
    except Exception as exc:  # noqa: BLE001 - a driver problem is a failed check, not a doctor crash
        return Check(name, "fail", f"checking it failed: {type(exc).__name__}: {exc}", "please report this")


def check_modemmanager(settings: Settings, proc: Path = PROC, rules_dir: Path = RULES_DIR) -> Check:
    """ModemManager probes new ttys with AT commands, which garbles scans or keeps a scanner's port busy."""
    serial = [s.name for s in settings.scanners if s.type == "serial" and s.enabled]
    if not serial:
        return Check("ModemManager", "ok", "no serial scanner configured")
    if not _running("ModemManager", proc):
        return Check("ModemManager", "ok", "not running")
    if _ignore_rule_installed(rules_dir):
        return Check("ModemManager", "ok", f"running, but a udev rule in {rules_dir} keeps it away from scanners")
    return Check("ModemManager", "warn", f"running, and no udev rule in {rules_dir} keeps it away from the "
                 f"serial scanner{'s' if len(serial) > 1 else ''} {', '.join(serial)} (it may send AT commands)",
                 f"{INSTALL_RULE}; or, with no modem on this till: sudo systemctl disable --now ModemManager")


def _running(command: str, proc: Path) -> bool:
    try:
        entries = [p for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return False
    for entry in entries:
        try:
            if (entry / "comm").read_text().strip() == command:
                return True
        except OSError:
            continue
    return False


def _ignore_rule_installed(rules_dir: Path) -> bool:
    if (rules_dir / Path(UDEV_RULE).name).exists():
        return True
    try:
        return any("ID_MM_DEVICE_IGNORE" in p.read_text(errors="replace") for p in rules_dir.glob("*.rules"))
    except OSError:
        return False


__all__ = ["check_camera", "check_hid", "check_modemmanager", "check_scanner", "check_serial", "check_stdin"]
