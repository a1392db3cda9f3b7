"""`posbridge gadget setup|remove` against a fake configfs root, and doctor's checks of each output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from posbridge.cli.root import app
from posbridge.config import OutputSettings
from posbridge.outputs.configfs import REPORT_DESCRIPTOR
from posbridge.outputs.doctor import check_output

GADGET = Path("sys/kernel/config/usb_gadget/posbridge")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A board: configfs with usb_gadget (libcomposite loaded) and one UDC, as on a Raspberry Pi 4."""
    (tmp_path / "sys/kernel/config/usb_gadget").mkdir(parents=True)
    (tmp_path / "sys/class/udc/fe980000.usb").mkdir(parents=True)
    return tmp_path


def gadget(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["gadget", *args], catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def tree(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = f"-> {os.readlink(path)}" if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
    return out


def test_setup_creates_a_boot_keyboard_bound_to_the_board_udc(root):
    code, output = gadget("setup", "--root", str(root))
    assert code == 0, output
    g = root / GADGET
    assert (g / "idVendor").read_text() == "0x1d6b"
    assert (g / "functions/hid.usb0/protocol").read_text() == "1"  # keyboard
    assert (g / "functions/hid.usb0/subclass").read_text() == "1"  # boot interface
    assert (g / "functions/hid.usb0/report_length").read_text() == "8"
    assert (g / "functions/hid.usb0/report_desc").read_bytes() == REPORT_DESCRIPTOR
    assert os.readlink(g / "configs/c.1/hid.usb0") == str(g / "functions/hid.usb0")
    assert (g / "UDC").read_text() == "fe980000.usb"
    assert "set UDC = fe980000.usb: changed" in output


def test_setup_twice_changes_nothing_the_second_time(root):
    assert gadget("setup", "--root", str(root))[0] == 0
    before = tree(root)
    code, output = gadget("setup", "--root", str(root))
    assert code == 0
    assert output.splitlines()[0] == "set up gadget posbridge: already done (bound to fe980000.usb)"
    assert tree(root) == before


def test_setup_completes_a_half_made_gadget(root):
    assert gadget("setup", "--root", str(root))[0] == 0
    (root / GADGET / "functions/hid.usb0/report_length").write_text("64")
    code, output = gadget("setup", "--root", str(root))
    assert code == 0
    assert "unbind the gadget from its USB device controller: changed" in output  # attributes cannot change while bound
    assert "set functions/hid.usb0/report_length = 8: changed" in output
    assert (root / GADGET / "UDC").read_text() == "fe980000.usb"


def test_dry_run_changes_nothing_and_says_each_step(root):
    before = tree(root)
    code, output = gadget("setup", "--root", str(root), "--dry-run")
    assert code == 0
    assert tree(root) == before
    assert "would set functions/hid.usb0/report_desc = 65 bytes" in output
    assert "would set UDC = fe980000.usb" in output


def test_remove_deletes_everything_and_again_is_harmless(root):
    empty = tree(root)
    assert gadget("setup", "--root", str(root))[0] == 0
    code, output = gadget("remove", "--root", str(root))
    assert code == 0, output
    assert "unbind the gadget from its USB device controller: changed" in output
    assert tree(root) == empty
    code, output = gadget("remove", "--root", str(root))
    assert (code, output.strip()) == (0, "remove gadget posbridge: already done (not present)")


def test_a_board_without_a_usb_device_controller_is_told_about_dtoverlay(root):
    (root / "sys/class/udc/fe980000.usb").rmdir()
    code, output = gadget("setup", "--root", str(root))
    assert code == 1
    assert "dtoverlay=dwc2" in output


def test_an_unknown_udc_is_refused_with_the_available_ones(root):
    code, output = gadget("setup", "--root", str(root), "--udc", "nope.usb")
    assert code == 1
    assert "'nope.usb' is not in /sys/class/udc (fe980000.usb)" in output


def test_without_configfs_the_fix_is_named(tmp_path):
    code, output = gadget("setup", "--root", str(tmp_path))
    assert code == 1
    assert "mount -t configfs" in output


def test_not_root_without_root_option_is_refused(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, output = gadget("setup")
    assert code == 2 and "needs root" in output


# -- doctor --

def test_doctor_names_gadget_setup_when_the_gadget_is_missing(root):
    check = check_output(OutputSettings(type="hid-gadget", device=str(root / "dev/hidg0")), root)
    assert check.status == "fail" and "sudo posbridge gadget setup" in check.fix


def test_doctor_says_unbound_gadget(root):
    assert gadget("setup", "--root", str(root))[0] == 0
    (root / GADGET / "UDC").write_text("\n")
    check = check_output(OutputSettings(type="hid-gadget", device=str(root / "dev/hidg0")), root)
    assert check.status == "fail" and "not bound" in check.detail


def test_doctor_passes_a_bound_gadget_with_its_device(root, tmp_path):
    assert gadget("setup", "--root", str(root))[0] == 0
    device = tmp_path / "hidg0"
    device.write_bytes(b"")
    check = check_output(OutputSettings(type="hid-gadget", device=str(device)), root)
    assert check.status == "ok" and "bound to fe980000.usb" in check.detail


def test_doctor_without_a_udc_names_dtoverlay(root):
    (root / "sys/class/udc/fe980000.usb").rmdir()
    check = check_output(OutputSettings(type="hid-gadget"), root)
    assert check.status == "fail" and "dtoverlay=dwc2" in check.fix


def test_doctor_names_modprobe_when_uinput_is_missing(tmp_path):
    check = check_output(OutputSettings(type="uinput", device=str(tmp_path / "uinput")))
    assert check.status == "fail" and "modprobe uinput" in check.fix


def test_doctor_names_the_udev_rule_when_uinput_is_not_writable(tmp_path, monkeypatch):
    device = tmp_path / "uinput"
    device.write_bytes(b"")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    check = check_output(OutputSettings(type="uinput", device=str(device)))
    assert check.status == "fail" and "99-posbridge-uinput.rules" in check.fix and "input" in check.fix
