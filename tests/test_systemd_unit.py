"""systemd/posbridge.service: what the daemon relies on is in it, and systemd's own analyzer rates it OK."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from posbridge.config import ServerSettings
from posbridge.secrets import CREDENTIAL_NAMES, SYSTEM_CREDENTIALS_DIR
from posbridge.service import render_unit

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "posbridge.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or (
    "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").exists() else None
)
MAX_EXPOSURE = 1.5


def settings(path: Path = UNIT) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit (comments dropped), values in file order."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min)?", value)
    assert match, f"unexpected time span {value!r}"
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "min": 60.0, None: 1.0}[match.group(2)]


needs_analyzer = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed here")


@needs_analyzer
def test_security_exposure_is_at_most_1_5() -> None:
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, f"no exposure level in systemd-analyze output:\n{result.stdout}\n{result.stderr}"
    exposure = float(match.group(1))
    failing = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}; not hardened:\n" + "\n".join(failing)


@needs_analyzer
def test_installed_unit_parses_without_warnings(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on the unit as ``posbridge service install`` writes it (real ExecStart)."""
    rendered = tmp_path / "posbridge.service"
    rendered.write_text(render_unit(UNIT.read_text(), Path(sys.executable)))
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(rendered)], capture_output=True, text=True, timeout=60)
    ours = [line for line in (result.stdout + result.stderr).splitlines() if f"{rendered}:" in line]
    assert ours == [], "\n".join(ours)


def test_unit_is_type_notify_with_a_watchdog_and_restarts_on_failure() -> None:
    unit = settings()
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert seconds(unit["WatchdogSec"][0]) == 30
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2 3"]  # config errors, an unrecognised database: a restart cannot fix them


def test_stop_timeout_leaves_room_for_the_daemons_shutdown_grace() -> None:
    grace = ServerSettings().shutdown_grace
    stop = seconds(settings()["TimeoutStopSec"][0])
    assert grace < stop <= grace + 10


def test_exec_start_runs_the_documented_venv_with_the_system_config() -> None:
    assert settings()["ExecStart"] == [
        "/opt/posbridge/venv/bin/posbridge run --config /etc/posbridge/posbridge.toml"
    ]


def test_credentials_match_what_secrets_reads_and_have_blank_fallbacks() -> None:
    unit = settings()
    expected = [f"{name}:{SYSTEM_CREDENTIALS_DIR / name}" for name in CREDENTIAL_NAMES.values()]
    assert unit["LoadCredential"] == expected
    assert unit["SetCredential"] == [f"{name}:\\n" for name in CREDENTIAL_NAMES.values()]
    text = UNIT.read_text()
    for name in CREDENTIAL_NAMES.values():
        assert f"#LoadCredentialEncrypted={name}:{SYSTEM_CREDENTIALS_DIR / name}.cred" in text


def test_runs_as_the_posbridge_user_with_its_directories() -> None:
    unit = settings()
    assert unit["User"] == ["posbridge"]
    assert set(unit["SupplementaryGroups"][0].split()) == {"dialout", "plugdev", "video", "input"}
    assert unit["StateDirectory"] == ["posbridge", "posbridge-marker"]  # the database marker: outside the state
    assert unit["ConfigurationDirectory"] == ["posbridge"]
    assert unit["ProtectSystem"] == ["strict"]


def test_devices_closed_except_scanners_cameras_and_keystroke_outputs() -> None:
    unit = settings()
    assert unit["DevicePolicy"] == ["closed"]
    assert set(unit["DeviceAllow"]) == {
        "char-ttyUSB rw", "char-ttyACM rw", "char-ttyS rw", "char-video4linux rw", "char-usb_device rw",
        "char-hidraw rw", "/dev/uinput rw", "char-hidg rw",
    }
    assert "PrivateDevices" not in unit  # it would hide the physical /dev nodes


def test_network_stays_open_to_the_lan_and_the_internet() -> None:
    """The POS connects over the LAN and the cloud is on the internet: no localhost-only IP allow list."""
    unit = settings()
    assert "IPAddressDeny" not in unit and "IPAddressAllow" not in unit
    assert "PrivateNetwork" not in unit
    families = unit["RestrictAddressFamilies"][0].split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"} == set(families)
