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
import errno
import math
import os
import shutil
import sqlite3
import time
from pathlib import Path

import httpx

from posbridge.checks import Check, Status, passed
from posbridge.cloud import probe_cloud
from posbridge.config import Settings, load_settings
from posbridge.errors import ConfigError
from posbridge.listener import bind_problem, listening_socket
from posbridge.marker import MarkerUnreadable, compare, inspect_database, marker_path, read_marker
from posbridge.outputs.doctor import check_output
from posbridge.redaction import register_secret
from posbridge.scanners.doctor import check_modemmanager, check_scanner
from posbridge.secrets import TokenKind, development_mode, find_tokens, fix_command, where_looked

CLOUD_TIMEOUT = 5.0
MAX_CLOCK_SKEW = 300.0
MIN_YEAR = 2024


# -- cloud -------------------------------------------------------------------------------------------------


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
    development = development_mode()
    kinds: tuple[tuple[TokenKind, str], ...] = (("cloud", "cloud token"), ("local", "local token"))
    for kind, label in kinds:
        found = find_tokens(kind)
        for token in found:
            register_secret(token.value)
        if not found:
            checks.append(Check(label, "fail", f"no {label}: {where_looked(kind)}",
                                f"{fix_command(kind)}, then sudo systemctl restart posbridge"))
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
    """``PRAGMA quick_check`` on the configured file, opened read-only (safe while the daemon runs), and the
    file compared with the database marker: missing, empty, replaced or rolled back where one existed fails."""
    path = settings.storage.path.absolute()
    where = marker_path(path, settings.storage.marker_directory)
    try:
        remembered = read_marker(where)
    except MarkerUnreadable as exc:
        return Check("database", "warn", str(exc), f"move it aside (sudo mv {where} {where}.bad); posbridge "
                     "writes a new one for the database it opens")
    mismatch = compare(path, inspect_database(path), remembered, where)
    if mismatch is not None:
        assert remembered is not None
        return Check("database", "fail", f"{mismatch.problem}; posbridge last ran on a database here "
                     f"({remembered.describe()}), so the daemon will not start",
                     f"put that database back at {path} (a backup, or {where.parent}/*.rescued-*.db), then restart; "
                     f"only if its invoices are delivered or re-entered: sudo rm {where} && sudo systemctl "
                     "restart posbridge (or posbridge run --accept-new-database)")
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
    extra += "; matches its marker" if remembered is not None else f"; no marker yet at {where}"
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
        return Check("disk space", "fail", detail + "; the daemon refuses new invoices until there is more",
                     "free space on that disk (old logs: journalctl --vacuum-size=100M)")
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
    try:
        listening_socket(host, port).close()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            version = _posbridge_at(host, port)
            if version is not None:
                return Check("listen address", "ok", f"{listen} is in use by a running posbridge {version}")
        detail, fix = bind_problem(host, port, exc)
        return Check("listen address", "fail", detail, fix)
    return Check("listen address", "ok", f"{listen} is free")


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
    checks += [check_output(o) for o in settings.outputs]
    return checks


__all__ = ["Check", "Status", "check_clock", "check_disk", "check_modemmanager", "check_scanner", "passed",
           "run_checks"]
