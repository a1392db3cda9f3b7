"""The USB keyboard gadget, made through configfs (``libcomposite``): what ``posbridge gadget setup/remove`` do.

Idempotent: each step looks before it writes, so running ``setup`` twice changes nothing the second time, and
``remove`` of a gadget that is not there says so and succeeds. Each step is reported as one line, as `posbridge service`
reports its steps ("...: changed", "...: already done", "would ..." in a dry run). ``root`` other than ``/`` puts every path under that directory (tests,
image building): the configfs tree is then a plain directory, so attribute files are written as files and
removed before their directory (on the real configfs the kernel owns them), and ``modprobe`` is skipped.

The gadget: a composite device (Linux Foundation 1d6b:0104) with one HID function, a boot-protocol keyboard
(subclass 1, protocol 1, 8-byte reports) whose report descriptor allows every key usage up to 0xFF, so the
ABNT2 ``/?`` key (International1, 0x87) can be typed too.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from posbridge.errors import GadgetError
from posbridge.service import Outcome, StepResult as Step

GADGET_NAME = "posbridge"
FUNCTION = "hid.usb0"
CONFIG = "c.1"
CONFIGFS = Path("sys/kernel/config")
UDC_CLASS = Path("sys/class/udc")

#: Boot keyboard: 8 modifier bits, a reserved byte, 5 LED bits (+3 padding) out, six key usages 0x00-0xFF.
REPORT_DESCRIPTOR = bytes([
    0x05, 0x01, 0x09, 0x06, 0xA1, 0x01,              # Usage Page (Generic Desktop), Usage (Keyboard), Collection
    0x05, 0x07, 0x19, 0xE0, 0x29, 0xE7,              # Usage Page (Keyboard), modifiers 0xE0-0xE7
    0x15, 0x00, 0x25, 0x01, 0x75, 0x01, 0x95, 0x08, 0x81, 0x02,  # 8 x 1 bit, Input (Data, Var, Abs)
    0x95, 0x01, 0x75, 0x08, 0x81, 0x03,              # reserved byte, Input (Const)
    0x95, 0x05, 0x75, 0x01, 0x05, 0x08, 0x19, 0x01, 0x29, 0x05, 0x91, 0x02,  # 5 LEDs, Output
    0x95, 0x01, 0x75, 0x03, 0x91, 0x03,              # LED padding
    0x95, 0x06, 0x75, 0x08, 0x15, 0x00, 0x26, 0xFF, 0x00,        # 6 keys, 0-255
    0x05, 0x07, 0x19, 0x00, 0x2A, 0xFF, 0x00, 0x81, 0x00,        # usages 0x00-0xFF, Input (Data, Array)
    0xC0,
])

ATTRIBUTES: dict[str, str | bytes] = {
    "idVendor": "0x1d6b",
    "idProduct": "0x0104",
    "bcdDevice": "0x0100",
    "bcdUSB": "0x0200",
    "strings/0x409/manufacturer": "posbridge",
    "strings/0x409/product": "posbridge keyboard",
    "strings/0x409/serialnumber": "posbridge0001",
    f"configs/{CONFIG}/strings/0x409/configuration": "keyboard",
    f"configs/{CONFIG}/MaxPower": "100",
    f"functions/{FUNCTION}/protocol": "1",
    f"functions/{FUNCTION}/subclass": "1",
    f"functions/{FUNCTION}/report_length": "8",
    f"functions/{FUNCTION}/report_desc": REPORT_DESCRIPTOR,
}

class Gadget:
    """The keyboard gadget under ``root`` (``/`` on a real board)."""

    def __init__(self, root: Path = Path("/"), *, dry_run: bool = False, udc: str | None = None,
                 report: Callable[[Step], None] | None = None,
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
        self.root = root
        self.real = root == Path("/")
        self.dry_run = dry_run
        self.udc = udc
        self.steps: list[Step] = []
        self._report = report
        self._run = run
        self.configfs = root / CONFIGFS
        self.path = self.configfs / "usb_gadget" / GADGET_NAME

    # -- what is there --

    def controllers(self) -> list[str]:
        """USB device controllers of this board (``/sys/class/udc``), e.g. ``fe980000.usb`` on a Raspberry Pi 4."""
        try:
            return sorted(os.listdir(self.root / UDC_CLASS))
        except OSError:
            return []

    def bound_to(self) -> str | None:
        """The UDC the gadget is bound to, or None (not bound, or no gadget)."""
        try:
            value = (self.path / "UDC").read_text().strip()
        except OSError:
            return None
        return value or None

    def exists(self) -> bool:
        return self.path.is_dir()

    # -- steps --

    def _step(self, what: str, outcome: Outcome, detail: str = "") -> Step:
        step = Step(what, outcome, detail)
        self.steps.append(step)
        if self._report is not None:
            self._report(step)
        return step

    def _fail(self, what: str, detail: str) -> GadgetError:
        self._step(what, "failed", detail)
        return GadgetError(f"{what}: {detail}")

    def _mkdir(self, path: Path) -> None:
        what = f"create directory {path.relative_to(self.root)}"
        if path.is_dir():
            return
        if self.dry_run:
            self._step(what, "would do")
            return
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise self._fail(what, f"cannot create: {exc.strerror}") from None
        self._step(what, "changed")

    def _write(self, path: Path, value: str | bytes) -> None:
        data = value if isinstance(value, bytes) else value.encode()
        shown = f"{len(data)} bytes" if isinstance(value, bytes) else value
        what = f"set {path.relative_to(self.path)} = {shown}"
        if self._matches(path, value):
            return
        if self.dry_run:
            self._step(what, "would do")
            return
        try:
            path.write_bytes(data)
        except OSError as exc:
            hint = " (unbind the gadget first: posbridge gadget remove)" if exc.errno == errno.EBUSY else ""
            raise self._fail(what, f"cannot write: {exc.strerror}{hint}") from None
        self._step(what, "changed")

    def _modprobe(self) -> None:
        if not self.real:
            return
        if (self.configfs / "usb_gadget").is_dir():
            return
        what = "load kernel module libcomposite"
        if self.dry_run:
            self._step(what, "would do", "modprobe libcomposite")
            return
        result = self._run(["modprobe", "libcomposite"], capture_output=True, text=True)
        if result.returncode != 0:
            raise self._fail(what, f"modprobe failed: {result.stderr.strip()} "
                             "(a kernel without USB gadget support; see drivers/README.md)")
        self._step(what, "changed")

    def setup(self) -> list[Step]:
        """Create (or complete) the gadget and bind it to a UDC. Raises :class:`GadgetError` on the first failure."""
        self._modprobe()
        if not (self.configfs / "usb_gadget").is_dir() and not self.dry_run:
            raise self._fail("find configfs", f"{self.configfs / 'usb_gadget'} does not exist: mount configfs "
                             "(sudo mount -t configfs none /sys/kernel/config) and load libcomposite")
        controllers = self.controllers()
        udc = self.udc or (controllers[0] if controllers else None)
        if udc is None or (self.udc and self.udc not in controllers):
            raise self._fail("find a USB device controller", (f"{self.udc!r} is not in /sys/class/udc ({', '.join(controllers)})"
                              if self.udc else "none in /sys/class/udc: this board has no USB device (OTG) port "
                              "enabled; add dtoverlay=dwc2 to the boot config (drivers/README.md) and reboot"))
        bound = self.bound_to()
        pending = [name for name, value in ATTRIBUTES.items() if not self._matches(self.path / name, value)]
        link = self.path / "configs" / CONFIG / FUNCTION
        if bound and not pending and link.is_symlink() and bound == udc:
            self._step(f"set up gadget {GADGET_NAME}", "already done", f"bound to {udc}")
            return self.steps
        if bound and (pending or bound != udc):
            self._unbind()
        for directory in ("", "strings/0x409", f"configs/{CONFIG}/strings/0x409", f"functions/{FUNCTION}"):
            self._mkdir(self.path / directory)
        for name, value in ATTRIBUTES.items():
            self._write(self.path / name, value)
        if not link.is_symlink():
            what = f"link the keyboard into configs/{CONFIG}"
            if self.dry_run:
                self._step(what, "would do")
            else:
                try:
                    link.symlink_to(self.path / "functions" / FUNCTION)
                except OSError as exc:
                    raise self._fail(what, f"cannot link: {exc.strerror}") from None
                self._step(what, "changed")
        self._write(self.path / "UDC", udc)
        return self.steps

    def _matches(self, path: Path, value: str | bytes) -> bool:
        data = value if isinstance(value, bytes) else value.encode()
        try:
            return path.read_bytes().strip(b"\n") == data.strip(b"\n")
        except OSError:
            return False

    def _unbind(self) -> None:
        what = "unbind the gadget from its USB device controller"
        if self.dry_run:
            self._step(what, "would do")
            return
        try:
            (self.path / "UDC").write_text("\n")
        except OSError as exc:
            raise self._fail(what, f"cannot unbind: {exc.strerror}") from None
        self._step(what, "changed")

    def _rmdir(self, path: Path) -> None:
        if not path.is_dir():
            return
        what = f"remove directory {path.relative_to(self.root)}"
        if self.dry_run:
            self._step(what, "would do")
            return
        try:
            if not self.real:  # a plain directory standing in for configfs: attribute files are ours to delete
                for entry in path.iterdir():
                    if entry.is_file() and not entry.is_symlink():
                        entry.unlink()
                    elif entry.is_dir() and not entry.is_symlink() and not any(entry.iterdir()):
                        entry.rmdir()  # the kernel's default groups (configs/, functions/, strings/)
            path.rmdir()
        except OSError as exc:
            raise self._fail(what, f"cannot remove: {exc.strerror}") from None
        self._step(what, "changed")

    def remove(self) -> list[Step]:
        """Unbind and delete the gadget. Nothing there: one "already done" line."""
        if not self.exists():
            self._step(f"remove gadget {GADGET_NAME}", "already done", "not present")
            return self.steps
        if self.bound_to():
            self._unbind()
        link = self.path / "configs" / CONFIG / FUNCTION
        if link.is_symlink():
            what = f"unlink the keyboard from configs/{CONFIG}"
            if self.dry_run:
                self._step(what, "would do")
            else:
                try:
                    link.unlink()
                except OSError as exc:
                    raise self._fail(what, f"cannot unlink: {exc.strerror}") from None
                self._step(what, "changed")
        for directory in (f"configs/{CONFIG}/strings/0x409", f"configs/{CONFIG}", f"functions/{FUNCTION}",
                          "strings/0x409", ""):
            self._rmdir(self.path / directory if directory else self.path)
        return self.steps


def hid_device_of(root: Path = Path("/")) -> str | None:
    """``/dev/hidgN`` of the gadget's keyboard function (from its ``dev`` major:minor), when it is bound."""
    try:
        dev = (root / CONFIGFS / "usb_gadget" / GADGET_NAME / "functions" / FUNCTION / "dev").read_text().strip()
        major, minor = (int(x) for x in dev.split(":"))
    except (OSError, ValueError):
        return None
    for name in sorted(os.listdir(root / "dev")) if (root / "dev").is_dir() else []:
        if name.startswith("hidg"):
            try:
                st = os.stat(root / "dev" / name)
            except OSError:
                continue
            if os.major(st.st_rdev) == major and os.minor(st.st_rdev) == minor:
                return f"/dev/{name}"
    return None
