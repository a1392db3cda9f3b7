"""`posbridge doctor` as a technician runs it: a subprocess, a config file, the sandbox as the cloud.

Checks that depend only on their arguments (clock, ModemManager, disk, decoders) are also called in-process with
the inputs a real till would give them (a fake /proc tree, a clock reading), because a test machine cannot be
made to run ModemManager or have a wrong clock.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from posbridge.config import CameraScanner, HidScanner, from_dict
from posbridge.doctor import check_clock, check_disk, check_modemmanager, check_scanner
from tests.support import usbsim
from tests.support.cli import run_posbridge
from tests.support.daemon import DaemonProcess, free_port, render_config
from tests.support.pty import PtyScanner
from tests.support.sandbox import SandboxProcess, running_sandbox

CLOUD_TOKEN = "sbx-doctor-cloud-7Qm2"
LOCAL_TOKEN = "doctor-local-K9x4"
EXPECTED_CHECKS = ["config", "cloud token", "local token", "cloud", "clock", "database", "disk space",
                   "listen address"]


@pytest.fixture(scope="module")
def cloud() -> Iterator[SandboxProcess]:
    with running_sandbox(token=CLOUD_TOKEN) as sandbox:
        yield sandbox


def write_config(workdir: Path, cloud_url: str, *, sections: dict[str, dict[str, Any]] | None = None,
                 scanners: list[dict[str, Any]] | None = None, text: str | None = None) -> Path:
    base: dict[str, dict[str, Any]] = {
        "server": {"listen": f"127.0.0.1:{free_port()}"},
        "cloud": {"base_url": cloud_url, "account": "demo", "timeout": 5},
        "storage": {"path": str(workdir / "state" / "posbridge.db")},
    }
    for section, values in (sections or {}).items():
        base.setdefault(section, {}).update(values)
    path = workdir / "posbridge.toml"
    path.write_text(text if text is not None else render_config(base, scanners or []))
    return path


def doctor_env(workdir: Path, cloud_token: str | None = CLOUD_TOKEN) -> dict[str, str]:
    """A technician's shell on a dev machine: tokens in the environment, no keyring, no system credentials."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY", "INVOCATION_ID", "POSBRIDGE_CONFIG")}
    env.update({"POSBRIDGE_LOCAL_TOKEN": LOCAL_TOKEN, "POSBRIDGE_DEV": "1",
                "POSBRIDGE_CREDENTIALS_DIR": str(workdir / "credentials"),
                "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    env.pop("POSBRIDGE_CLOUD_TOKEN", None)
    if cloud_token is not None:
        env["POSBRIDGE_CLOUD_TOKEN"] = cloud_token
    return env


def run_doctor(config: Path, env: dict[str, str], *args: str,
               unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    """``posbridge doctor --config CONFIG ARGS``. ``unprivileged``: as root, without root's power to ignore file
    permissions (CAP_DAC_OVERRIDE), which is what the service user lacks."""
    prefix: list[str] = []
    if unprivileged and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    return run_posbridge(["doctor", "--config", str(config), *args], env=env, prefix=prefix)


def by_name(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    checks = json.loads(result.stdout)
    assert all(set(c) == {"check", "status", "detail", "fix"} for c in checks)
    return {c["check"]: c for c in checks}


def test_doctor_json_passes_against_the_sandbox(cloud: SandboxProcess, tmp_path: Path) -> None:
    config = write_config(tmp_path, cloud.url)
    result = run_doctor(config, doctor_env(tmp_path), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = by_name(result)
    assert list(checks)[:len(EXPECTED_CHECKS)] == EXPECTED_CHECKS
    assert all(c["status"] == "ok" for c in checks.values()), checks
    assert "token accepted (HTTP 404)" in checks["cloud"]["detail"]
    assert "from the environment variable POSBRIDGE_CLOUD_TOKEN" in checks["cloud token"]["detail"]
    assert "will be created" in checks["database"]["detail"]
    assert "of the cloud's clock" in checks["clock"]["detail"]
    assert not (tmp_path / "state").exists(), "doctor must not create the database"
    assert CLOUD_TOKEN not in result.stdout + result.stderr and LOCAL_TOKEN not in result.stdout + result.stderr


def test_table_output_shows_each_check_with_status_detail_and_fix(cloud: SandboxProcess, tmp_path: Path) -> None:
    config = write_config(tmp_path, cloud.url)
    result = run_doctor(config, doctor_env(tmp_path, cloud_token=None))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].split(" | ") == ["check         ", "status", "detail".ljust(60), "fix"]
    cloud_token_row = next(line for line in lines if line.startswith("cloud token"))
    assert "| FAIL   |" in cloud_token_row and "sudo posbridge token set --system" in result.stdout
    assert "failed" in lines[-1]


def test_wrong_cloud_token_fails_as_token_refused(cloud: SandboxProcess, tmp_path: Path) -> None:
    config = write_config(tmp_path, cloud.url)
    result = run_doctor(config, doctor_env(tmp_path, cloud_token="revoked-token-0000"), "--json")
    assert result.returncode == 1
    check = by_name(result)["cloud"]
    assert check["status"] == "fail"
    assert "token refused" in check["detail"] and "HTTP 401" in check["detail"]
    assert "posbridge token set" in check["fix"]
    assert "revoked-token-0000" not in result.stdout + result.stderr


def test_unreachable_cloud_fails_as_cloud_unreachable(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    result = run_doctor(config, doctor_env(tmp_path), "--json")
    assert result.returncode == 1
    checks = by_name(result)
    assert checks["cloud"]["status"] == "fail" and "cloud unreachable" in checks["cloud"]["detail"]
    assert "base_url" in checks["cloud"]["fix"]
    assert checks["clock"]["status"] == "ok" and "not compared" in checks["clock"]["detail"]


def test_unreadable_serial_scanner_fails_naming_the_path_and_the_dialout_group(
        cloud: SandboxProcess, tmp_path: Path) -> None:
    with PtyScanner() as scanner:
        os.chmod(scanner.path, 0o000)
        config = write_config(tmp_path, cloud.url, scanners=[
            {"type": "serial", "name": "front-door", "port": scanner.path},
            {"type": "serial", "name": "unplugged", "port": str(tmp_path / "ttyACM9")}])
        result = run_doctor(config, doctor_env(tmp_path), "--json", unprivileged=True)
    assert result.returncode == 1, result.stderr
    checks = by_name(result)
    denied = checks["scanner front-door"]
    assert denied["status"] == "fail"
    assert "permission denied" in denied["detail"] and scanner.path in denied["detail"]
    assert "dialout" in denied["fix"] and "drivers/99-posbridge-scanners.rules" in denied["fix"]
    missing = checks["scanner unplugged"]
    assert missing["status"] == "fail" and "does not exist" in missing["detail"]
    assert checks["cloud"]["status"] == "ok"  # the other checks still ran


def test_readable_serial_scanner_passes(cloud: SandboxProcess, tmp_path: Path) -> None:
    with PtyScanner() as scanner:
        config = write_config(tmp_path, cloud.url, scanners=[{"type": "serial", "name": "till", "port": scanner.path}])
        result = run_doctor(config, doctor_env(tmp_path), "--json")
    assert result.returncode == 0, result.stdout
    assert by_name(result)["scanner till"]["status"] == "ok"


def test_config_typo_fails_at_the_config_check_naming_the_file_and_the_key(
        cloud: SandboxProcess, tmp_path: Path) -> None:
    config = write_config(tmp_path, cloud.url, sections={"server": {"lisen": "127.0.0.1:8080"}})
    result = run_doctor(config, doctor_env(tmp_path), "--json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    checks = by_name(result)
    assert checks["config"]["status"] == "fail"
    assert str(config) in checks["config"]["detail"]
    assert "[server] lisen" in checks["config"]["detail"] and "unknown key" in checks["config"]["detail"]
    assert "posbridge.example.toml" in checks["config"]["fix"]
    assert checks["cloud token"]["status"] == "ok"  # what does not need the config is still checked
    assert "cloud" not in checks


def test_everything_wrong_at_once_is_named_in_one_run(cloud: SandboxProcess, tmp_path: Path) -> None:
    """The three acceptance failures together minus the typo (a typo stops at the config check)."""
    config = write_config(tmp_path, cloud.url, scanners=[
        {"type": "serial", "name": "gone", "port": str(tmp_path / "ttyUSB7")}])
    result = run_doctor(config, doctor_env(tmp_path, cloud_token="wrong-token-1234"), "--json")
    failed = {name for name, c in by_name(result).items() if c["status"] == "fail"}
    assert result.returncode == 1
    assert failed == {"cloud", "scanner gone"}


def test_running_daemon_owns_the_port_and_its_database_checks_out(cloud: SandboxProcess, tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, cloud.url, CLOUD_TOKEN, "demo", local_token=LOCAL_TOKEN).start()
    try:
        result = run_doctor(daemon.config_path, doctor_env(tmp_path), "--json")
    finally:
        daemon.stop()
    assert result.returncode == 0, result.stdout
    checks = by_name(result)
    assert "in use by a running posbridge" in checks["listen address"]["detail"]
    assert "integrity ok" in checks["database"]["detail"] and "0 invoices pending" in checks["database"]["detail"]


def test_port_held_by_another_program_fails(cloud: SandboxProcess, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, cloud.url, sections={"server": {"listen": f"127.0.0.1:{port}"}})
    with socket.create_server(("127.0.0.1", port)):  # listens, never answers HTTP
        result = run_doctor(config, doctor_env(tmp_path), "--json")
    check = by_name(result)["listen address"]
    assert result.returncode == 1
    assert check["status"] == "fail" and "another program" in check["detail"]
    assert "[server] listen" in check["fix"]


def test_corrupt_database_fails_with_its_path(cloud: SandboxProcess, tmp_path: Path) -> None:
    config = write_config(tmp_path, cloud.url)
    database = tmp_path / "state" / "posbridge.db"
    database.parent.mkdir()
    database.write_bytes(b"this was a database before the power cut" * 100)
    result = run_doctor(config, doctor_env(tmp_path), "--json")
    check = by_name(result)["database"]
    assert result.returncode == 1
    assert check["status"] == "fail" and str(database) in check["detail"] and "not a database" in check["detail"]
    assert database.read_bytes().startswith(b"this was a database"), "doctor must not touch the file"


# -- checks called directly with a till's inputs ------------------------------------------------------------


def settings_with_serial(tmp_path: Path) -> Any:
    return from_dict({"storage": {"path": str(tmp_path / "db")},
                      "scanners": [{"type": "serial", "name": "front", "port": "/dev/ttyACM0"}]})


def fake_proc(tmp_path: Path, *commands: str) -> Path:
    proc = tmp_path / "proc"
    for pid, command in enumerate(commands, start=100):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(command + "\n")
    (proc / "self").mkdir(parents=True, exist_ok=True)
    return proc


def test_modemmanager_running_beside_a_serial_scanner_without_the_udev_rule_warns(tmp_path: Path) -> None:
    rules = tmp_path / "rules.d"
    rules.mkdir()
    check = check_modemmanager(settings_with_serial(tmp_path), fake_proc(tmp_path, "systemd", "ModemManager"), rules)
    assert check.status == "warn" and "front" in check.detail
    assert "99-posbridge-scanners.rules" in check.fix


def test_modemmanager_is_fine_when_the_ignore_rule_is_installed_or_it_is_not_running(tmp_path: Path) -> None:
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "99-posbridge-scanners.rules").write_text('ENV{ID_MM_DEVICE_IGNORE}="1"\n')
    settings = settings_with_serial(tmp_path)
    assert check_modemmanager(settings, fake_proc(tmp_path, "ModemManager"), rules).status == "ok"
    assert check_modemmanager(settings, fake_proc(tmp_path / "b", "sshd"), tmp_path / "none").status == "ok"


def test_clock_before_2024_fails_and_skew_over_five_minutes_fails() -> None:
    assert check_clock(None, now=978307200.0).status == "fail"  # 2001-01-01
    now = time.time()
    assert check_clock(now - 400, now=now).status == "fail"
    assert check_clock(now - 30, now=now).status == "ok"
    assert "not compared" in check_clock(None, now=now).detail


def test_disk_below_min_free_bytes_fails(tmp_path: Path) -> None:
    settings = from_dict({"storage": {"path": str(tmp_path / "db"), "min_free_bytes": 2**62}})
    check = check_disk(settings)
    assert check.status == "fail" and "min_free_bytes" in check.detail


def test_camera_with_a_decoder_that_cannot_read_wallet_formats_fails(tmp_path: Path) -> None:
    video = tmp_path / "demo.mp4"
    video.write_bytes(b"\0")
    camera = CameraScanner(type="camera", name="counter", source=str(video), decoder="zbar", formats=["qr", "aztec"])
    check = check_scanner(camera)
    assert check.status == "fail" and "aztec" in check.detail and "zxing" in check.detail


def hid_config(device: usbsim.SimDevice, **values: Any) -> HidScanner:
    return HidScanner(type="hid", name="gun", vid=device.vid, pid=device.pid, **values)


def test_usb_scanner_present_and_openable_passes() -> None:
    device = usbsim.honeywell_pos()
    check = check_scanner(hid_config(device, serial_number=device.serial), usb_backend=usbsim.SimBackend(device))
    assert check.status == "ok" and "0c2e:0b8f" in check.detail


def test_usb_scanner_without_the_udev_rule_fails_naming_plugdev_and_the_rule() -> None:
    device = usbsim.honeywell_pos()
    device.access_denied = True
    check = check_scanner(hid_config(device), usb_backend=usbsim.SimBackend(device))
    assert check.status == "fail" and "permission denied" in check.detail
    assert "plugdev" in check.fix and "drivers/99-posbridge-scanners.rules" in check.fix


def test_usb_scanner_not_plugged_in_or_with_another_serial_fails() -> None:
    device = usbsim.honeywell_pos()
    assert check_scanner(hid_config(device), usb_backend=usbsim.SimBackend()).status == "fail"
    other = check_scanner(hid_config(device, serial_number="NOT-THIS-ONE"), usb_backend=usbsim.SimBackend(device))
    assert other.status == "fail" and other.detail == "no USB device 0c2e:0b8f (serial NOT-THIS-ONE) is plugged in"
