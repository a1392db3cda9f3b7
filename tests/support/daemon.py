"""The daemon as a real process, called over HTTP like a POS would.

``DaemonProcess`` writes a TOML config into a temporary directory, starts ``python -m posbridge.cli run`` with
the tokens in the environment, waits for ``/readyz`` and offers the calls a POS makes. It can be killed with
SIGKILL and started again on the same database, which is how crash safety is tested.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.cli import run_posbridge
from tests.support.paths import REPO
from tests.support.sandbox import free_port

LOCAL_TOKEN = "local-test-token-5f2c"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def render_config(sections: dict[str, dict[str, Any]], scanners: list[dict[str, Any]] = ()) -> str:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    for scanner in scanners:
        lines.append("[[scanners]]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in scanner.items())
        lines.append("")
    return "\n".join(lines)


class DaemonProcess:
    """One posbridge daemon. ``overrides`` are merged into the config sections."""

    def __init__(self, workdir: Path, cloud_url: str, cloud_token: str, account: str,
                 overrides: dict[str, dict[str, Any]] | None = None,
                 scanners: list[dict[str, Any]] | None = None,
                 local_token: str = LOCAL_TOKEN, env: dict[str, str] | None = None,
                 wrapper: list[str] | None = None) -> None:
        self.workdir = workdir
        self.wrapper = list(wrapper or [])  # a command the daemon runs under (e.g. setpriv)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.local_token = local_token
        self.cloud_token = cloud_token
        self.db_path = workdir / "state" / "posbridge.db"
        self.log_path = workdir / "daemon.log"
        sections: dict[str, dict[str, Any]] = {
            "server": {"listen": f"127.0.0.1:{self.port}"},
            "cloud": {"base_url": cloud_url, "account": account, "timeout": 5},
            "storage": {"path": str(self.db_path)},
            "delivery": {"backoff_base": 0.2, "backoff_cap": 2, "auth_probe_interval": 1, "poll_interval": 0.2},
            "logging": {"level": "info", "format": "text"},
        }
        for section, values in (overrides or {}).items():
            sections.setdefault(section, {}).update(values)
        self.config_path = workdir / "posbridge.toml"
        self.config_path.write_text(render_config(sections, scanners or []))
        self.env = {**os.environ, "POSBRIDGE_CLOUD_TOKEN": cloud_token, "POSBRIDGE_LOCAL_TOKEN": local_token,
                    "POSBRIDGE_DEV": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc: subprocess.Popen | None = None
        self.client = httpx.Client(base_url=self.url, timeout=30)

    # -- lifecycle --

    def command(self, *args: str) -> list[str]:
        return [*self.wrapper, sys.executable, "-m", "posbridge.cli", "run", "--config", str(self.config_path),
                *args]

    def start(self, timeout: float = 20.0, stdin: int | None = subprocess.DEVNULL, *, args: tuple[str, ...] = (),
              ready: bool = True) -> "DaemonProcess":
        """Start and wait until ``/readyz`` answers 200 (``ready=False``: until ``/healthz`` does)."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(*args), cwd=REPO, env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=stdin)
        route = "/readyz" if ready else "/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}{route}", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the daemon did not become ready in {timeout} s:\n{self.log()}")

    def start_refused(self, timeout: float = 30.0, *, args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """Start a daemon that is expected to refuse to start; its exit code and output."""
        return subprocess.run(self.command(*args), cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a power cut of the process."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.client.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    # -- what a POS does --

    def post_invoice(self, body: bytes | dict, *, content_type: str | None = "application/json",
                     token: str | None = None, **kwargs: Any) -> httpx.Response:
        """POST an invoice as a POS does; ``content_type=None`` sends no Content-Type header at all."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        headers = {"Content-Type": content_type} if content_type is not None else {}
        return self.client.post("/agora/invoices", content=data, headers=headers,
                                params={"_token": token or self.local_token, "ow_account": "demo"}, **kwargs)

    def get_member(self, member_id: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(f"/agora/member/{member_id}", params={"_token": self.local_token}, **kwargs)

    def status(self) -> dict[str, Any]:
        response = self.client.get("/v1/status", params={"_token": self.local_token})
        response.raise_for_status()
        return response.json()

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """Run a `posbridge` command against this daemon's configuration."""
        return run_posbridge([*args, "--config", str(self.config_path)], env=self.env, input=input)

    def wait_for(self, predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {last!r}\n{self.log()}")


def invoice(number: int | str, *, serie: str = "T1", member: str | None = "OW7K2M9Q", total: float = 12.5,
            workplace: int | str | None = None, global_id: str | None = None) -> dict:
    """A small invoice in the shape of the fixtures (``Workplace`` and ``GlobalId`` only when given)."""
    document: dict[str, Any] = {
        "DocumentType": "Invoice", "Serie": serie, "Number": number, "BusinessDay": "2026-11-20",
        "Loyalty": {"MemberId": member} if member else None,
        "Lines": [{"Index": 1, "ProductName": "Café", "Quantity": 1, "UnitPrice": total}],
        "Totals": {"GrossAmount": total, "Currency": "EUR"},
    }
    if workplace is not None:
        document["Workplace"] = {"Id": workplace, "Name": f"Tienda {workplace}"}
    if global_id is not None:
        document["GlobalId"] = global_id
    return document


def bridge_key(number: int | str, *, serie: str = "T1") -> str:
    """The key the bridge stores and delivers ``invoice(number, serie=serie)`` under (its sale identity, sent as
    ``Idempotency-Key``); the sandbox files the same invoice as ``f"{serie}-{number}"``."""
    return f"doc:Serie={serie};Number={number}"
