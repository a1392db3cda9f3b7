"""`posbridge doctor`: everything a technician checks by hand on a new till, each with its fix.

Each check returns a :class:`Check` whose ``status`` is ``ok``, ``warn`` or ``fail``. Warnings do not fail the
run; any failure does. What callers (the CLI, ``token check``) may rely on:

- nothing here raises for a problem it was asked to look at: a bad config, a corrupt database, a missing device
  are failed checks that name the file, key or path and say what to do;
- no token value ever appears in a ``detail`` or ``fix`` (sources are named, values never);
- nothing is modified: the database is opened read-only (and not created when missing), the listen address is
  bound for an instant and released, USB devices are only asked for their language ids.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import math
import os
import shutil
import socket
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from posbridge.cloud import CloudClient
from posbridge.config import CameraScanner, CloudSettings, HidScanner, SerialScanner, Settings, load_settings
from posbridge.errors import CloudAuthError, CloudUnavailable, ConfigError
from posbridge.logs import register_secret
from posbridge.secrets import CREDENTIAL_NAMES, ENV_DEV, ENV_NAMES, TokenKind, credentials_dir, find_tokens, redact

Status = Literal["ok", "warn", "fail"]

SENTINEL_MEMBER = "__posbridge_token_check__"
"""A member id no shop has: the cloud answers 404 when it accepts the token, 401/403 when it does not."""
CLOUD_TIMEOUT = 5.0
MAX_CLOCK_SKEW = 300.0
MIN_YEAR = 2024
UDEV_RULE = "drivers/99-posbridge-scanners.rules"
RULES_DIR = Path("/etc/udev/rules.d")
PROC = Path("/proc")
INSTALL_RULE = (f"sudo cp {UDEV_RULE} /etc/udev/rules.d/ && sudo udevadm control --reload "
                "&& sudo udevadm trigger, then re-plug the scanner")


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    check: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def passed(checks: list[Check]) -> bool:
    """True when no check failed (warnings are allowed)."""
    return all(c.status != "fail" for c in checks)


# -- cloud -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CloudProbe:
    """What asking the cloud for :data:`SENTINEL_MEMBER` showed. ``outcome``: ``ok`` (the token is accepted),
    ``refused`` (401/403), ``unreachable`` (no HTTP answer) or ``error`` (an answer that says neither)."""

    outcome: Literal["ok", "refused", "unreachable", "error"]
    detail: str
    status: int | None = None
    server_time: float | None = None  # the cloud's Date header, epoch seconds


async def probe_cloud(settings: CloudSettings, token: str, *, timeout: float = CLOUD_TIMEOUT,
                      want_date: bool = True) -> CloudProbe:
    """Ask the cloud through :class:`CloudClient` (the daemon's own client) whether it accepts ``token``.

    With ``want_date``, a second, token-less request reads the cloud's ``Date`` header for the clock check
    (the client does not expose headers, and the token must not travel for a clock reading)."""
    client = CloudClient(settings, token)
    try:
        answer = await client.get_member(SENTINEL_MEMBER, timeout=timeout)
    except CloudAuthError as exc:
        probe = CloudProbe("refused", f"token refused: the cloud answered HTTP {exc.status}", exc.status)
    except CloudUnavailable as exc:
        if exc.status is None:
            return CloudProbe("unreachable", f"cloud unreachable: {redact(exc.reason, token)}")
        reason = exc.reason if 300 <= exc.status < 400 else "cannot tell whether the token works"
        probe = CloudProbe("error", f"the cloud answered HTTP {exc.status}; {reason}", exc.status)
    else:
        if 200 <= answer.status < 300 or answer.status == 404:
            probe = CloudProbe("ok", f"token accepted (HTTP {answer.status})", answer.status)
        else:
            excerpt = redact(answer.body[:200].decode("utf-8", "replace"), token)
            probe = CloudProbe("error", f"the cloud answered HTTP {answer.status}: {excerpt}", answer.status)
    finally:
        await client.aclose()
    if want_date:
        probe = CloudProbe(probe.outcome, probe.detail, probe.status, await _cloud_time(settings, timeout))
    return probe


async def _cloud_time(settings: CloudSettings, timeout: float) -> float | None:
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
            response = await http.get(settings.base_url + "/")
        when = email.utils.parsedate_to_datetime(response.headers.get("date", ""))
    except (httpx.HTTPError, TypeError, ValueError, IndexError):
        return None
    return when.timestamp() if when is not None else None


def check_cloud(settings: Settings, token: str | None) -> tuple[Check, float | None]:
    """The cloud check and, when the cloud answered, its clock."""
    base = settings.cloud.base_url
    if token is None:
        return Check("cloud", "fail", "not checked: there is no cloud token", "store the cloud token first "
                     "(see the cloud token check)"), None
    probe = asyncio.run(probe_cloud(settings.cloud, token, timeout=min(CLOUD_TIMEOUT, settings.cloud.timeout)))
    account = "" if settings.cloud.account else "; no [cloud] account set, the cloud may need it"
    if probe.outcome == "ok":
        status: Status = "warn" if account else "ok"
        return Check("cloud", status, f"{base} reachable, {probe.detail}{account}",
                     "set [cloud] account to the shop's Omniwallet subdomain" if account else ""), probe.server_time
    fixes = {
        "refused": "get a new API token from Omniwallet and store it: sudo posbridge token set --system; "
                   "check [cloud] account too (a token of another account is refused)",
        "unreachable": f"check the network, DNS and firewall of this machine, and [cloud] base_url = {base!r}",
        "error": f"try again later; if it persists check [cloud] base_url = {base!r} and [cloud] account",
    }
    return Check("cloud", "fail", f"{base}: {probe.detail}{account}", fixes[probe.outcome]), probe.server_time


def check_clock(server_time: float | None, now: float | None = None) -> Check:
    """A till whose clock is years off writes nonsense dates; minutes off confuses TLS and the cloud."""
    now = time.time() if now is None else now
    shown = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    fix = "turn on time synchronisation: sudo timedatectl set-ntp true (a clock wrong after power-off: RTC battery)"
    if time.gmtime(now).tm_year < MIN_YEAR:
        return Check("clock", "fail", f"the clock says {shown}, which cannot be right", fix)
    if server_time is None:
        return Check("clock", "ok", f"{shown}; not compared with the cloud (no answer)")
    skew = now - server_time
    if abs(skew) > MAX_CLOCK_SKEW:
        return Check("clock", "fail", f"{shown} is {skew:+.0f} s off the cloud's clock "
                     f"(more than {MAX_CLOCK_SKEW:.0f} s)", fix)
    return Check("clock", "ok", f"{shown}, within {abs(skew):.0f} s of the cloud's clock")


# -- configuration and tokens ------------------------------------------------------------------------------


def check_config(path: Path | None) -> tuple[Settings | None, Check]:
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        missing = exc.problems == ["file not found"] or "no configuration found" in str(exc)
        fix = (f"copy config/posbridge.example.toml to {exc.source} and fill it in, or pass --config" if missing
               else f"edit {exc.source} and correct what is named; config/posbridge.example.toml lists every key")
        return None, Check("config", "fail", str(exc), fix + " (the other checks need a valid configuration)")
    scanners = len(settings.scanners)
    return settings, Check("config", "ok", f"{settings.source} is valid ({scanners} scanner"
                           f"{'' if scanners == 1 else 's'})")


def check_tokens() -> tuple[list[Check], str | None]:
    """Where each token comes from (never its value); returns the cloud token for the cloud check."""
    checks, cloud = [], None
    development = os.environ.get(ENV_DEV) == "1" and not os.environ.get("INVOCATION_ID")
    kinds: tuple[tuple[TokenKind, str], ...] = (("cloud", "cloud token"), ("local", "local token"))
    for kind, label in kinds:
        found = find_tokens(kind)
        for token in found:
            register_secret(token.value)
        if not found:
            command = ("sudo posbridge token set --system" if kind == "cloud"
                       else "sudo posbridge token generate --local --system")
            checks.append(Check(label, "fail", f"no {label}: looked in the systemd credential "
                                f"{CREDENTIAL_NAMES[kind]!r}, {credentials_dir() / CREDENTIAL_NAMES[kind]}, "
                                f"the system keyring and ${ENV_NAMES[kind]}",
                                f"{command}, then sudo systemctl restart posbridge"))
            continue
        if kind == "cloud":
            cloud = found[0].value
        detail = f"from the {found[0].source}"
        if len(found) > 1:
            detail += "; also present, not used: " + ", ".join(t.source for t in found[1:])
        if found[0].source.startswith("environment") and not development:
            checks.append(Check(label, "warn", detail + " (environment variables leak into child processes)",
                                "put it in the service's credential file: sudo posbridge token set "
                                f"{'--local ' if kind == 'local' else ''}--system"))
        else:
            checks.append(Check(label, "ok", detail))
    return checks, cloud


# -- storage and network -----------------------------------------------------------------------------------


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_database(settings: Settings) -> Check:
    """``PRAGMA quick_check`` on the configured file, opened read-only (safe while the daemon runs)."""
    path = settings.storage.path.absolute()
    if not path.exists():
        parent = _existing_ancestor(path.parent)
        if not os.access(parent, os.W_OK | os.X_OK):
            return Check("database", "warn", f"{path} does not exist yet and {parent} is not writable by this "
                         "user", "the service creates it when StateDirectory=posbridge is set (the shipped unit); "
                         "otherwise create the directory for the service user")
        return Check("database", "ok", f"{path} does not exist yet; it will be created at start")
    from posbridge.db import SCHEMA_VERSION

    try:
        conn = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True, timeout=5.0)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            try:
                pending = conn.execute("SELECT COUNT(*) FROM invoices WHERE state = 'pending'").fetchone()[0]
            except sqlite3.Error:  # a file from before the outbox table
                pending = None
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if not os.access(path, os.R_OK):
            return Check("database", "fail", f"cannot read {path}: permission denied",
                         "run doctor as root (sudo posbridge doctor) or as the service user")
        return Check("database", "fail", f"{path} cannot be read as a database: {exc}", _CORRUPT_FIX)
    if problems != ["ok"]:
        return Check("database", "fail", f"{path} is damaged: " + "; ".join(problems[:3]), _CORRUPT_FIX)
    if version > SCHEMA_VERSION:
        return Check("database", "fail", f"{path} was written by a newer posbridge (schema {version}, this one "
                     f"knows {SCHEMA_VERSION})", "upgrade posbridge instead of downgrading")
    extra = f", {pending} invoice{'' if pending == 1 else 's'} pending" if pending is not None else ""
    return Check("database", "ok", f"{path}: integrity ok, schema {version}{extra}")


_CORRUPT_FIX = ("stop posbridge, copy the file, recover it (sqlite3 FILE .recover | sqlite3 NEW.db) and put NEW.db in "
                "its place; failing that, move it aside and start again (invoices pending in it must be re-entered)")


def _size(count: float) -> str:
    exponent = min(int(math.log(max(count, 1), 1024)), 4)
    return f"{count / 1024 ** exponent:.1f} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[exponent]}"


def check_disk(settings: Settings) -> Check:
    where = _existing_ancestor(settings.storage.path.absolute())
    try:
        free = shutil.disk_usage(where).free
    except OSError as exc:
        return Check("disk space", "fail", f"cannot measure free space at {where}: {exc.strerror or exc}",
                     "check the state directory exists and is mounted")
    minimum = settings.storage.min_free_bytes
    detail = f"{_size(free)} free at {where} ([storage] min_free_bytes = {_size(minimum)})"
    if free < minimum:
        return Check("disk space", "fail", detail, "free space on that disk (old logs: journalctl --vacuum-size=100M)")
    return Check("disk space", "ok", detail)


def _posbridge_at(host: str, port: int) -> str | None:
    """The version of the posbridge answering on host:port, or None when it is something else."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    try:
        with httpx.Client(timeout=2.0, follow_redirects=False) as http:
            if http.get(base + "/healthz").status_code != 200:
                return None
            about = http.get(base + "/").json()
    except (httpx.HTTPError, ValueError):
        return None
    if isinstance(about, dict) and about.get("service") == "posbridge":
        return str(about.get("version") or "?")
    return None


def check_listen(settings: Settings) -> Check:
    """Free (the daemon can bind it) or held by a running posbridge (this one, already running)."""
    host, port, listen = settings.server.host, settings.server.port, settings.server.listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            version = _posbridge_at(host, port)
            if version is not None:
                return Check("listen address", "ok", f"{listen} is in use by a running posbridge {version}")
            return Check("listen address", "fail", f"{listen} is in use by another program",
                         f"stop it (sudo ss -ltnp 'sport = :{port}' names it) or change [server] listen")
        if exc.errno == errno.EADDRNOTAVAIL:
            return Check("listen address", "fail", f"this machine has no address {host}",
                         "fix [server] listen: 127.0.0.1 for a POS on this machine, 0.0.0.0 for the network")
        if exc.errno == errno.EACCES:
            return Check("listen address", "fail", f"cannot listen on {listen}: permission denied",
                         "ports below 1024 need privileges; use 8080")
        return Check("listen address", "fail", f"cannot listen on {listen}: {exc.strerror or exc}",
                     "fix [server] listen")
    return Check("listen address", "ok", f"{listen} is free")


# -- scanners ----------------------------------------------------------------------------------------------


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


def _check_serial(name: str, config: SerialScanner) -> Check:
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


def _check_hid(name: str, config: HidScanner, backend: Any) -> Check:
    """Found by vid/pid through pyusb, then opened (asking its language ids): errno 13 means no udev rule."""
    import usb.core
    import usb.util

    from posbridge.scanners import hid

    ids = hid.usb_ids(config.vid, config.pid, config.serial_number)
    try:
        backend = backend if backend is not None else hid.backend_factory()
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


def _check_camera(name: str, config: CameraScanner) -> Check:
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


def check_scanner(config: Any, *, usb_backend: Any = None) -> Check:
    """One configured scanner: present and readable by this user (drivers are imported only when needed).
    ``usb_backend``: the pyusb backend for USB scanners, like ``HidSource(backend=)`` (default: libusb)."""
    name = f"scanner {config.name}"
    if not config.enabled:
        return Check(name, "ok", "disabled in the configuration (enabled = false)")
    try:
        if config.type == "serial":
            return _check_serial(name, config)
        if config.type == "hid":
            return _check_hid(name, config, usb_backend)
        if config.type == "camera":
            return _check_camera(name, config)
    except Exception as exc:  # noqa: BLE001 - a driver problem is a failed check, not a doctor crash
        return Check(name, "fail", f"checking it failed: {type(exc).__name__}: {exc}", "please report this")
    return Check(name, "ok", "reads the terminal (standard input)")


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


# -- all of it ---------------------------------------------------------------------------------------------


def run_checks(config_path: Path | None) -> list[Check]:
    """Every check, in the order a technician fixes things. A bad config stops after the token checks."""
    settings, config_check = check_config(config_path)
    token_checks, cloud_token = check_tokens()
    checks = [config_check, *token_checks]
    if settings is None:
        return checks
    cloud_check, server_time = check_cloud(settings, cloud_token)
    checks += [cloud_check, check_clock(server_time), check_database(settings), check_disk(settings),
               check_listen(settings)]
    checks += [check_scanner(s) for s in settings.scanners]
    checks.append(check_modemmanager(settings))
    return checks
