"""Install and remove posbridge as a systemd service on a Debian-like machine (``posbridge service ...``).

Every step is idempotent and reports one :class:`StepResult`: ``changed`` (it did something), ``already done``
(nothing to do), ``ok`` (a command ran), ``would do`` (``dry_run``: nothing is touched, state is only read),
``skipped`` (``root`` is an alternative root: no users, no systemctl, no udevadm) or ``failed`` (the detail says
why; the remaining steps still run). Running ``install`` twice therefore reports no ``changed`` the second time.

What is installed, from a checkout (``sources``: ``systemd/``, ``config/``, ``drivers/``; by default the
directory above the package): the ``posbridge`` system user (no login, groups dialout/plugdev/video),
``/etc/posbridge`` with ``credentials/`` (0700), the example configuration when there is none, the unit with
``ExecStart=`` pointing at the running virtualenv's ``posbridge``, the udev rules; then daemon-reload, udev
reload and ``systemctl enable``. The service is not started: the tokens have to be in place first.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import posbridge
from posbridge.errors import InstallError

SERVICE_USER = "posbridge"
SERVICE_GROUPS = ("dialout", "plugdev", "video", "input")
UNIT_NAME = "posbridge.service"
CONFIG_PATH = Path("/etc/posbridge/posbridge.toml")
UDEV_SUBSYSTEMS = ("tty", "usb", "video4linux", "hidraw")

_MISSING_HINTS = {
    "systemctl": "is this a systemd machine?",
    "udevadm": "is udev installed (apt-get install udev)?",
    "useradd": "install the passwd package (apt-get install passwd)",
    "usermod": "install the passwd package (apt-get install passwd)",
    "groupadd": "install the passwd package (apt-get install passwd)",
    "userdel": "install the passwd package (apt-get install passwd)",
}

Outcome = Literal["changed", "already done", "ok", "would do", "skipped", "failed"]
Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class StepResult:
    """One step's outcome. ``action`` is imperative ("create system user posbridge")."""

    action: str
    outcome: Outcome
    detail: str = ""

    def line(self) -> str:
        if self.outcome == "would do":
            return f"would {self.action}" + (f" ({self.detail})" if self.detail else "")
        return f"{self.action}: {self.outcome}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Sources:
    """The files ``install`` copies, found in a checkout of the project."""

    root: Path

    @property
    def unit_template(self) -> Path:
        return self.root / "systemd" / UNIT_NAME

    @property
    def example_config(self) -> Path:
        return self.root / "config" / "posbridge.example.toml"

    @property
    def udev_rules(self) -> list[Path]:
        return sorted((self.root / "drivers").glob("*.rules"))


def find_sources(explicit: Path | None = None) -> Sources:
    """``explicit``, else the directory above the installed package (an editable install from a checkout)."""
    root = explicit or Path(posbridge.__file__).resolve().parents[1]
    sources = Sources(root)
    if not sources.unit_template.is_file():
        raise InstallError(
            f"{sources.unit_template} not found: install from a checkout of posbridge (pip install -e), "
            "or pass --source /path/to/the/checkout"
        )
    return sources


def current_executable() -> Path:
    """The ``posbridge`` command of the running virtualenv (symlinks kept: the venv's python is one)."""
    beside = Path(sys.executable).parent / "posbridge"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside.absolute()
    found = shutil.which("posbridge")
    if found:
        return Path(found).absolute()
    raise InstallError(f"no posbridge command next to {sys.executable} or on PATH; run it from the venv's bin/")


# What the unit's sandboxing hides from the service: a command there fails to start with status=203/EXEC.
HIDDEN_FROM_SERVICE = (
    ("/tmp", "PrivateTmp=yes"),
    ("/var/tmp", "PrivateTmp=yes"),
    ("/home", "ProtectHome=yes"),
    ("/root", "ProtectHome=yes"),
    ("/run/user", "ProtectHome=yes"),
)
PACKAGED_UNITS = (Path("/lib/systemd/system") / UNIT_NAME, Path("/usr/lib/systemd/system") / UNIT_NAME)


def _interpreter(script: Path) -> Path | None:
    """The ``#!`` interpreter of a script (a virtualenv's ``posbridge`` names the venv's python)."""
    try:
        with script.open("rb") as handle:
            first = handle.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    return Path(words[0]) if words else None


def hidden_from_service(executable: Path) -> list[tuple[Path, str]]:
    """Every path the service needs to run ``executable`` (the script, its interpreter, and where their
    symlinks lead) that the unit's sandboxing hides, with the setting that hides it."""
    needed = [executable, executable.resolve()]
    interpreter = _interpreter(executable)
    if interpreter is not None:
        needed += [interpreter, interpreter.resolve()]
    hidden = []
    for path in dict.fromkeys(needed):
        for prefix, setting in HIDDEN_FROM_SERVICE:
            if path == Path(prefix) or Path(prefix) in path.parents:
                hidden.append((path, setting))
                break
    return hidden


def check_executable(executable: Path) -> None:
    """Refuse (``InstallError`` with the reason and the fix) a command the hardened unit could not run."""
    hidden = hidden_from_service(executable)
    if not hidden:
        return
    reasons = "; ".join(f"{path} is hidden from the service by {setting}" for path, setting in hidden)
    raise InstallError(
        f"the service could not run {executable}: {reasons} (it would fail with status=203/EXEC). Fix: install "
        "posbridge outside /home, /root and /tmp with Debian's Python, e.g. `sudo python3 -m venv "
        "/opt/posbridge/venv && sudo /opt/posbridge/venv/bin/pip install /path/to/posbridge`, then run "
        "`sudo /opt/posbridge/venv/bin/posbridge service install`; or install the Debian package (`make deb`)"
    )


def check_not_packaged(root: Path | None, *, removing: bool = False) -> None:
    """Refuse to put a second unit over the Debian package's, or to take the package's apart by hand."""
    if root is not None:
        return
    for unit in PACKAGED_UNITS:
        if unit.exists():
            what = ("remove it with `sudo apt remove posbridge` (`apt purge` also deletes data)" if removing else
                    "the user, the unit and the udev rules are in place already; configure it with "
                    "`sudo posbridge setup`")
            raise InstallError(f"posbridge is installed from the Debian package ({unit}): {what}")


def render_unit(template: str, executable: Path, *, config: Path = CONFIG_PATH, sources: Path | None = None) -> str:
    """The unit text with ``ExecStart=`` running ``executable`` (and ``Documentation=`` pointing at the
    checkout's README when ``sources`` is given)."""
    exec_start = f"ExecStart={_unit_word(str(executable))} run --config {_unit_word(str(config))}"
    text, count = re.subn(r"(?m)^ExecStart=.*$", lambda _: exec_start, template)
    if count != 1:
        raise InstallError(f"the unit template must have exactly one ExecStart= line, it has {count}")
    if sources is not None:
        readme = f"Documentation=file://{sources / 'systemd' / 'README.md'}"
        text = re.sub(r"(?m)^Documentation=file://.*$", lambda _: readme, text)
    return text


def _unit_word(value: str) -> str:
    """Quote one ExecStart= word for systemd: ``%`` is a specifier, whitespace splits words."""
    value = value.replace("%", "%%")
    if re.fullmatch(r"[A-Za-z0-9_./+:@=,-]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _run(command: Sequence[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(list(command), capture_output=True, text=True, timeout=120, check=False)


class Installer:
    """Runs the install or uninstall steps; ``report`` is called after each one (the CLI prints it)."""

    def __init__(
        self,
        sources: Sources,
        *,
        root: Path | None = None,
        dry_run: bool = False,
        executable: Path | None = None,
        report: Callable[[StepResult], None] = lambda step: None,
        runner: Runner = _run,
        run_commands: bool | None = None,
    ) -> None:
        """``run_commands`` (default: only without ``root``) decides whether useradd/systemctl/udevadm run;
        tests pass a recording ``runner`` with it."""
        self.sources = sources
        self.root = root or Path("/")
        self.dry_run = dry_run
        self.executable = executable
        self.report = report
        self.runner = runner
        self.run_commands = root is None if run_commands is None else run_commands
        self.results: list[StepResult] = []

    # --- paths ------------------------------------------------------------------------------------------
    def path(self, absolute: str | Path) -> Path:
        return self.root / str(absolute).lstrip("/")

    @property
    def etc(self) -> Path:
        return self.path("/etc/posbridge")

    @property
    def unit_path(self) -> Path:
        return self.path(f"/etc/systemd/system/{UNIT_NAME}")

    @property
    def rules_dir(self) -> Path:
        return self.path("/etc/udev/rules.d")

    # --- plumbing ---------------------------------------------------------------------------------------
    def _done(self, action: str, outcome: Outcome, detail: str = "") -> StepResult:
        step = StepResult(action, outcome, detail)
        self.results.append(step)
        self.report(step)
        return step

    def _command(self, action: str, commands: Sequence[Sequence[str]], *, needed: bool = True) -> StepResult:
        """Run system commands, or report why not (``--root``, ``--dry-run``, nothing to do)."""
        shown = "; ".join(shlex.join(c) for c in commands)
        if not self.run_commands:
            return self._done(action, "skipped", f"--root: {', '.join(dict.fromkeys(c[0] for c in commands))} not run")
        if not needed:
            return self._done(action, "already done")
        if self.dry_run:
            return self._done(action.split(" (")[0], "would do", shown)  # the exact commands replace the summary
        for command in commands:
            try:
                result = self.runner(command)
            except FileNotFoundError:
                hint = _MISSING_HINTS.get(command[0], "is this a Debian-like machine?")
                return self._done(action, "failed", f"{command[0]} not found; {hint}")
            except subprocess.TimeoutExpired:
                return self._done(action, "failed", f"{' '.join(command)} did not finish in time")
            if result.returncode != 0:
                error = (result.stderr or result.stdout).strip().splitlines()
                reason = error[-1] if error else f"exit status {result.returncode}"
                return self._done(action, "failed", f"{' '.join(command)}: {reason}")
        return self._done(action, "ok" if action.startswith(("reload", "run")) else "changed")

    def _probe(self, command: Sequence[str]) -> str:
        """Output of a read-only query (``systemctl is-enabled``); empty when it cannot run."""
        try:
            return self.runner(command).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    def _directory(self, path: Path, mode: int) -> StepResult:
        action = f"create directory {str(path)} (mode {mode:04o})"
        if path.is_dir():
            if (path.stat().st_mode & 0o777) == mode:
                return self._done(action, "already done")
            if self.dry_run:
                return self._done(f"set mode {mode:04o} on {str(path)}", "would do")
            path.chmod(mode)
            return self._done(action, "changed", "mode corrected")
        if self.dry_run:
            return self._done(action, "would do")
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        return self._done(action, "changed")

    def _file(self, action: str, target: Path, content: bytes, *, replace: bool = True) -> bool:
        """Write ``content`` atomically (mode 0644) unless it is there already. True when it changed (or,
        in a dry run, would change)."""
        if target.exists() and (not replace or target.read_bytes() == content):
            self._done(action, "already done", "" if replace else "kept as it is")
            return False
        if self.dry_run:
            self._done(action, "would do")
            return True
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.posbridge-tmp")
        temporary.write_bytes(content)
        temporary.chmod(0o644)
        os.replace(temporary, target)
        self._done(action, "changed")
        return True

    def _remove(self, path: Path) -> bool:
        """Delete a file or a whole directory. True when it was there (in a dry run: would be deleted)."""
        action = f"remove {str(path)}"
        if not path.exists() and not path.is_symlink():
            self._done(action, "already done")
            return False
        if self.dry_run:
            self._done(action, "would do")
            return True
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        self._done(action, "changed")
        return True

    # --- install ----------------------------------------------------------------------------------------
    def install(self) -> list[StepResult]:
        """All install steps in order; see the module docstring. Raises :class:`InstallError` before any step
        when the unit could not run the command on this system (see :func:`check_executable`)."""
        executable = self.executable or current_executable()
        if self.root == Path("/"):
            check_executable(executable)
        self._user()
        self._directory(self.etc, 0o755)
        self._directory(self.etc / "credentials", 0o700)
        config = self.etc / "posbridge.toml"
        if self.sources.example_config.is_file():
            self._file(f"install configuration {str(config)}", config,
                       self.sources.example_config.read_bytes(), replace=False)
        elif config.exists():
            self._done(f"install configuration {str(config)}", "already done", "kept as it is")
        else:
            self._done(f"install configuration {str(config)}", "failed",
                       f"{self.sources.example_config} is missing; write the configuration by hand")
        unit = render_unit(self.sources.unit_template.read_text(encoding="utf-8"), executable,
                           sources=self.sources.root)
        unit_changed = self._file(f"install unit {str(self.unit_path)} (ExecStart={executable})",
                                  self.unit_path, unit.encode("utf-8"))
        rules_changed = False
        rules = self.sources.udev_rules
        if not rules:
            self._done("install udev rules", "skipped", f"no *.rules in {self.sources.root / 'drivers'}")
        for rule in rules:
            target = self.rules_dir / rule.name
            rules_changed |= self._file(f"install udev rules {str(target)}", target, rule.read_bytes())
        self._command("reload systemd (systemctl daemon-reload)", [["systemctl", "daemon-reload"]],
                      needed=unit_changed)
        self._command(
            "reload udev rules (udevadm control --reload; udevadm trigger)",
            [["udevadm", "control", "--reload"],
             ["udevadm", "trigger", "--action=change", *(f"--subsystem-match={s}" for s in UDEV_SUBSYSTEMS)]],
            needed=rules_changed,
        )
        enabled = self.run_commands and self._probe(["systemctl", "is-enabled", UNIT_NAME]) == "enabled"
        self._command(f"enable {UNIT_NAME} at boot (systemctl enable)", [["systemctl", "enable", UNIT_NAME]],
                      needed=not enabled)
        return self.results

    def _user(self) -> None:
        action = f"create system user {SERVICE_USER} (groups {', '.join(SERVICE_GROUPS)})"
        commands: list[list[str]] = [["groupadd", "--system", g] for g in SERVICE_GROUPS if not _group_exists(g)]
        try:
            user = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            commands.append([
                "useradd", "--system", "--user-group", "--home-dir", "/var/lib/posbridge", "--no-create-home",
                "--shell", "/usr/sbin/nologin", "--comment", "posbridge point-of-sale bridge",
                "--groups", ",".join(SERVICE_GROUPS), SERVICE_USER,
            ])
        else:
            missing = [g for g in SERVICE_GROUPS if not _in_group(user, g)]
            if missing:
                commands.append(["usermod", "--append", "--groups", ",".join(missing), SERVICE_USER])
        if not self.run_commands and not commands:
            commands = [["useradd", "--system", SERVICE_USER]]  # shown as skipped
        self._command(action, commands, needed=bool(commands))

    # --- uninstall --------------------------------------------------------------------------------------
    def uninstall(self, *, purge: bool = False) -> list[StepResult]:
        """Disable and remove the unit and our udev rules. ``purge`` also deletes ``/etc/posbridge``, the
        state directory (the database: unsent invoices are lost) and the system user."""
        active = self.run_commands and self._probe(["systemctl", "is-active", UNIT_NAME]) == "active"
        enabled = self.run_commands and self._probe(["systemctl", "is-enabled", UNIT_NAME]) == "enabled"
        self._command(f"stop and disable {UNIT_NAME} (systemctl disable --now)",
                      [["systemctl", "disable", "--now", UNIT_NAME]], needed=active or enabled)
        unit_removed = self._remove(self.unit_path)
        names = {r.name for r in self.sources.udev_rules}
        if self.rules_dir.is_dir():
            names |= {p.name for p in self.rules_dir.glob("*posbridge*.rules")}
        rules_removed = False
        for name in sorted(names):
            rules_removed |= self._remove(self.rules_dir / name)
        self._command("reload systemd (systemctl daemon-reload)", [["systemctl", "daemon-reload"]],
                      needed=unit_removed)
        self._command("reload udev rules (udevadm control --reload)", [["udevadm", "control", "--reload"]],
                      needed=rules_removed)
        state = self.path("/var/lib/posbridge")
        marker = self.path("/var/lib/posbridge-marker")  # the database marker (StateDirectory=posbridge-marker)
        if not purge:
            for kept in (self.etc, state, marker):
                self._done(f"keep {str(kept)}", "skipped", "--purge deletes it")
            return self.results
        self._remove(self.etc)
        self._remove(state)
        self._remove(marker)
        exists = _user_exists(SERVICE_USER)
        self._command(f"remove system user {SERVICE_USER}", [["userdel", SERVICE_USER]], needed=exists)
        return self.results


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _in_group(user: pwd.struct_passwd, group: str) -> bool:
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False
    return user.pw_name in entry.gr_mem or user.pw_gid == entry.gr_gid


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
