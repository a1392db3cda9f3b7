"""`posbridge service install|uninstall`: steps, idempotence, dry runs, and which system commands run.

Files go under a temporary ``--root``; system commands (useradd, systemctl, udevadm) are recorded by a stand-in
runner instead of being run, because running them would change this machine.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from posbridge import service as service_mod
from posbridge.cli.root import app
from posbridge.service import (
    UNIT_NAME,
    Installer,
    InstallError,
    Sources,
    StepResult,
    current_executable,
    find_sources,
    render_unit,
)
from tests.support.paths import REPO

RULES = 'SUBSYSTEM=="tty", ATTRS{idVendor}=="0c2e", GROUP="dialout", MODE="0660"\n'


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout with the real unit, a small example config and one udev rules file."""
    root = tmp_path / "checkout"
    (root / "systemd").mkdir(parents=True)
    (root / "systemd" / UNIT_NAME).write_text((REPO / "systemd" / UNIT_NAME).read_text())
    (root / "config").mkdir()
    (root / "config" / "posbridge.example.toml").write_text('[cloud]\naccount = "demo"\n')
    (root / "drivers").mkdir()
    (root / "drivers" / "99-posbridge-scanners.rules").write_text(RULES)
    return root


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "root"


def cli(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["service", *args], catch_exceptions=False)
    return result.exit_code, (result.stdout + result.stderr).splitlines()


class Recorder:
    """Stands in for subprocess.run: records commands, answers probes, fails on request."""

    def __init__(self, *, enabled: bool = False, fail: dict[str, str] | None = None,
                 missing: Sequence[str] = ()) -> None:
        self.commands: list[list[str]] = []
        self.enabled = enabled
        self.fail = fail or {}
        self.missing = set(missing)

    def __call__(self, command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        command = list(command)
        if command[0] in self.missing:
            raise FileNotFoundError(command[0])
        self.commands.append(command)
        if command[:2] == ["systemctl", "is-enabled"]:
            return subprocess.CompletedProcess(command, 0 if self.enabled else 1,
                                               "enabled\n" if self.enabled else "disabled\n", "")
        if command[:2] == ["systemctl", "is-active"]:
            return subprocess.CompletedProcess(command, 3, "inactive\n", "")
        key = " ".join(command[:2])
        if key in self.fail:
            return subprocess.CompletedProcess(command, 1, "", self.fail[key] + "\n")
        if command[:2] == ["systemctl", "enable"]:
            self.enabled = True
        return subprocess.CompletedProcess(command, 0, "", "")

    def changing(self) -> list[list[str]]:
        return [c for c in self.commands if c[:2] not in (["systemctl", "is-enabled"], ["systemctl", "is-active"])]


def test_dry_run_lists_every_step_and_writes_nothing(checkout: Path, target: Path) -> None:
    code, lines = cli("install", "--dry-run", "--root", str(target), "--source", str(checkout))
    assert code == 0, lines
    text = "\n".join(lines)
    for expected in (
        "create system user posbridge (groups dialout, plugdev, video, input): skipped",
        f"would create directory {target}/etc/posbridge (mode 0755)",
        f"would create directory {target}/etc/posbridge/credentials (mode 0700)",
        f"would install configuration {target}/etc/posbridge/posbridge.toml",
        f"would install unit {target}/etc/systemd/system/posbridge.service",
        f"would install udev rules {target}/etc/udev/rules.d/99-posbridge-scanners.rules",
        "reload systemd (systemctl daemon-reload): skipped",
        "reload udev rules (udevadm control --reload; udevadm trigger): skipped",
        "enable posbridge.service at boot (systemctl enable): skipped",
    ):
        assert expected in text
    assert not target.exists()


def test_install_into_a_root_twice_reports_everything_already_done(checkout: Path, target: Path) -> None:
    code, first = cli("install", "--root", str(target), "--source", str(checkout))
    assert code == 0, first
    assert sum(line.endswith(": changed") for line in first) == 5  # 2 directories, config, unit, rules
    code, second = cli("install", "--root", str(target), "--source", str(checkout))
    assert code == 0, second
    assert len(second) == len(first)
    for line in second:
        assert ": already done" in line or ": skipped (" in line, line


def test_install_puts_each_file_in_place_with_the_right_mode(checkout: Path, target: Path) -> None:
    assert cli("install", "--root", str(target), "--source", str(checkout))[0] == 0
    etc = target / "etc" / "posbridge"
    assert stat.S_IMODE((etc / "credentials").stat().st_mode) == 0o700
    assert (etc / "posbridge.toml").read_text() == '[cloud]\naccount = "demo"\n'
    unit = (target / "etc" / "systemd" / "system" / UNIT_NAME).read_text()
    assert f"ExecStart={current_executable()} run --config /etc/posbridge/posbridge.toml\n" in unit
    assert f"Documentation=file://{checkout}/systemd/README.md\n" in unit
    assert stat.S_IMODE((target / "etc" / "systemd" / "system" / UNIT_NAME).stat().st_mode) == 0o644
    assert (target / "etc" / "udev" / "rules.d" / "99-posbridge-scanners.rules").read_text() == RULES


def test_install_keeps_an_edited_configuration_but_refreshes_the_unit(checkout: Path, target: Path) -> None:
    sources = Sources(checkout)
    Installer(sources, root=target, executable=Path("/opt/posbridge/venv/bin/posbridge")).install()
    config = target / "etc" / "posbridge" / "posbridge.toml"
    config.write_text('[cloud]\naccount = "edited-by-the-technician"\n')
    results = Installer(sources, root=target, executable=Path("/srv/new venv/bin/posbridge")).install()
    assert config.read_text() == '[cloud]\naccount = "edited-by-the-technician"\n'
    outcomes = {r.action.split(" (")[0]: r.outcome for r in results}
    assert outcomes[f"install configuration {config}"] == "already done"
    unit_step = next(r for r in results if r.action.startswith("install unit"))
    assert unit_step.outcome == "changed"
    assert 'ExecStart="/srv/new venv/bin/posbridge" run' in (target / "etc/systemd/system" / UNIT_NAME).read_text()


def test_dry_run_on_the_real_system_only_reads(checkout: Path) -> None:
    recorder = Recorder()
    watched = [Path("/etc/posbridge"), Path("/etc/systemd/system") / UNIT_NAME,
               Path("/etc/udev/rules.d/99-posbridge-scanners.rules")]
    before = [p.exists() for p in watched]
    results = Installer(Sources(checkout), dry_run=True, runner=recorder,
                        executable=Path("/opt/posbridge/venv/bin/posbridge")).install()
    assert [p.exists() for p in watched] == before
    assert recorder.changing() == []
    assert all(r.outcome in ("would do", "already done") for r in results), [r.line() for r in results]


def test_commands_run_once_on_first_install_and_not_again(checkout: Path, target: Path) -> None:
    recorder = Recorder()
    first = Installer(Sources(checkout), root=target, runner=recorder, run_commands=True).install()
    ran = recorder.changing()
    assert ["systemctl", "daemon-reload"] in ran
    assert ["udevadm", "control", "--reload"] in ran
    assert ["systemctl", "enable", UNIT_NAME] in ran
    trigger = next(c for c in ran if c[:2] == ["udevadm", "trigger"])
    assert "--subsystem-match=tty" in trigger and "--subsystem-match=hidraw" in trigger
    assert all(r.outcome != "failed" for r in first)
    recorder.commands.clear()
    second = Installer(Sources(checkout), root=target, runner=recorder, run_commands=True).install()
    # The recorder does not really create the user, so only the user step may repeat.
    assert [c for c in recorder.changing() if c[0] not in ("useradd", "usermod", "groupadd")] == []
    assert all(r.outcome == "already done" for r in second if not r.action.startswith("create system user"))


def _machine_with_users(monkeypatch: pytest.MonkeyPatch, users: dict[str, list[str]]) -> None:
    """This machine's user and group databases, as the installer sees them: ``users`` maps a user name to the
    supplementary groups it is in; every group named exists, plus the device groups."""
    groups = {name: [user for user, member_of in users.items() if name in member_of]
              for name in {*service_mod.SERVICE_GROUPS, *(g for gs in users.values() for g in gs)}}

    def getpwnam(name: str) -> pwd.struct_passwd:
        if name not in users:
            raise KeyError(name)
        return pwd.struct_passwd((name, "x", 999, 999, "", "/var/lib/posbridge", "/usr/sbin/nologin"))

    def getgrnam(name: str) -> grp.struct_group:
        if name not in groups:
            raise KeyError(name)
        return grp.struct_group((name, "x", 1000 + sorted(groups).index(name), groups[name]))

    monkeypatch.setattr(service_mod.pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(service_mod.grp, "getgrnam", getgrnam)


def test_useradd_creates_a_no_login_system_user_in_the_device_groups(
        checkout: Path, target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _machine_with_users(monkeypatch, {})
    recorder = Recorder()
    Installer(Sources(checkout), root=target, runner=recorder, run_commands=True).install()
    useradd = next(c for c in recorder.commands if c[0] == "useradd")
    assert useradd[-1] == "posbridge"
    assert "--system" in useradd and "/usr/sbin/nologin" in useradd
    assert useradd[useradd.index("--groups") + 1] == "dialout,plugdev,video,input"


def test_a_failing_command_is_reported_and_the_remaining_steps_still_run(checkout: Path, target: Path) -> None:
    recorder = Recorder(fail={"systemctl daemon-reload": "System has not been booted with systemd"})
    lines: list[str] = []
    Installer(Sources(checkout), root=target, runner=recorder, run_commands=True,
              report=lambda step: lines.append(step.line())).install()
    failed = [line for line in lines if ": failed" in line]
    assert failed == ["reload systemd (systemctl daemon-reload): failed "
                      "(systemctl daemon-reload: System has not been booted with systemd)"]
    assert ["systemctl", "enable", UNIT_NAME] in recorder.commands


def test_a_machine_without_systemctl_gets_a_clear_failure(checkout: Path, target: Path) -> None:
    results = Installer(Sources(checkout), root=target, runner=Recorder(missing=["systemctl"]),
                        run_commands=True).install()
    failed = [r for r in results if r.outcome == "failed"]
    assert failed and all("systemctl not found; is this a systemd machine?" in r.detail for r in failed)


def test_uninstall_removes_unit_and_rules_but_keeps_configuration_and_data(checkout: Path, target: Path) -> None:
    assert cli("install", "--root", str(target), "--source", str(checkout))[0] == 0
    code, lines = cli("uninstall", "--root", str(target), "--source", str(checkout))
    assert code == 0, lines
    assert not (target / "etc/systemd/system" / UNIT_NAME).exists()
    assert not (target / "etc/udev/rules.d/99-posbridge-scanners.rules").exists()
    assert (target / "etc/posbridge/posbridge.toml").exists()
    assert f"keep {target}/etc/posbridge: skipped (--purge deletes it)" in lines


def test_purge_needs_confirmation_and_then_removes_configuration(checkout: Path, target: Path) -> None:
    assert cli("install", "--root", str(target), "--source", str(checkout))[0] == 0
    code, lines = cli("uninstall", "--purge", "--root", str(target), "--source", str(checkout))
    assert code == 2 and any("add --yes" in line for line in lines)
    assert (target / "etc/posbridge").exists()
    code, lines = cli("uninstall", "--purge", "--yes", "--root", str(target), "--source", str(checkout))
    assert code == 0, lines
    assert not (target / "etc/posbridge").exists()


def test_uninstall_with_commands_disables_an_enabled_service(checkout: Path, target: Path) -> None:
    recorder = Recorder(enabled=True)
    Installer(Sources(checkout), root=target, runner=recorder, run_commands=True).uninstall()
    assert ["systemctl", "disable", "--now", UNIT_NAME] in recorder.commands


def test_real_install_without_root_is_refused(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, lines = cli("install", "--source", str(checkout))
    assert code == 2 and any("needs root: sudo" in line for line in lines)


def test_a_checkout_without_the_unit_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="--source"):
        find_sources(tmp_path)
    code, lines = cli("install", "--dry-run", "--source", str(tmp_path))
    assert code == 1 and any("not found" in line for line in lines)


def test_the_package_finds_its_own_checkout() -> None:
    assert find_sources().unit_template == REPO / "systemd" / UNIT_NAME


def test_render_unit_quotes_paths_for_systemd() -> None:
    template = "[Service]\nExecStart=/old/posbridge run\n"
    assert render_unit(template, Path("/opt/a b/100%/posbridge")) == (
        '[Service]\nExecStart="/opt/a b/100%%/posbridge" run --config /etc/posbridge/posbridge.toml\n'
    )
    with pytest.raises(InstallError, match="exactly one ExecStart="):
        render_unit("[Service]\n", Path("/x"))


def test_step_lines_read_as_the_technician_expects() -> None:
    assert StepResult("create user posbridge", "would do").line() == "would create user posbridge"
    assert StepResult("install unit", "already done").line() == "install unit: already done"
    assert StepResult("reload", "failed", "boom").line() == "reload: failed (boom)"


def test_an_existing_user_is_only_added_to_the_device_groups_it_lacks(
        checkout: Path, target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _machine_with_users(monkeypatch, {"posbridge": ["dialout"]})
    recorder = Recorder()
    Installer(Sources(checkout), root=target, runner=recorder, run_commands=True).install()
    accounts = [c for c in recorder.commands if c[0] in ("useradd", "usermod", "groupadd")]
    assert accounts == [["usermod", "--append", "--groups", "plugdev,video,input", "posbridge"]]
