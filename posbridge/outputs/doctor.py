"""Doctor's checks for keystroke outputs: the device is there, this user may write it, the gadget is bound.

Nothing is opened for writing and nothing is typed: devices are only stat()ed and access()ed, and the gadget's
configfs attributes are read. Each failure names the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from posbridge.checks import Check
from posbridge.config import OutputSettings
from posbridge.outputs.configfs import Gadget

UINPUT_RULE = "drivers/99-posbridge-uinput.rules"


def _access(name: str, path: str, fix_missing: str, fix_denied: str) -> Check | None:
    if not os.path.exists(path):
        return Check(name, "fail", f"{path} does not exist", fix_missing)
    if not os.access(path, os.R_OK | os.W_OK):
        return Check(name, "fail", f"permission denied on {path} for this user (uid {os.getuid()})", fix_denied)
    return None


def check_output(settings: OutputSettings, root: Path = Path("/")) -> Check:
    """One line for one ``[[outputs]]`` entry."""
    name = f"output {settings.name}"
    if not settings.enabled:
        return Check(name, "ok", "disabled (enabled = false)")
    if settings.type == "uinput":
        try:
            import evdev  # noqa: F401
        except ImportError:
            return Check(name, "fail", "python-evdev is not installed", "in posbridge's virtualenv: pip install "
                         "evdev-binary (x86_64) or pip install 'posbridge[uinput]' (other machines; needs gcc, "
                         "python3-dev, linux-libc-dev)")
        problem = _access(name, settings.device,
                          "sudo modprobe uinput, and load it at boot: echo uinput | sudo tee "
                          "/etc/modules-load.d/uinput.conf",
                          f"sudo cp {UINPUT_RULE} /etc/udev/rules.d/ && sudo udevadm control --reload && sudo "
                          "udevadm trigger; sudo usermod -aG input posbridge")
        return problem or Check(name, "ok", f"{settings.device} is writable; types in the {settings.layout} layout")
    gadget = Gadget(root)
    controllers = gadget.controllers()
    if not gadget.exists():
        if not controllers:
            return Check(name, "fail", "no USB keyboard gadget, and this board has no USB device controller "
                         "(/sys/class/udc is empty)", "add dtoverlay=dwc2 to the boot config and reboot "
                         "(drivers/README.md says which boards can); then sudo posbridge gadget setup")
        return Check(name, "fail", "the USB keyboard gadget is not set up",
                     "sudo posbridge gadget setup (and at every boot: see drivers/README.md)")
    bound = gadget.bound_to()
    if bound is None:
        return Check(name, "fail", "the USB keyboard gadget exists but is not bound to a USB device controller "
                     f"({', '.join(controllers) or 'none available'})", "sudo posbridge gadget setup")
    problem = _access(name, settings.device, "sudo posbridge gadget setup, and check the device name "
                      "(the first HID gadget function is /dev/hidg0)",
                      f"sudo cp {UINPUT_RULE} /etc/udev/rules.d/ (it covers /dev/hidg*) && sudo udevadm trigger; "
                      "sudo usermod -aG input posbridge")
    return problem or Check(name, "ok", f"{settings.device} is writable; gadget bound to {bound}; types in the "
                            f"{settings.layout} layout")
