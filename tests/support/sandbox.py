"""The sandbox cloud as a real subprocess, for tests that need a cloud over real HTTP.

`running_sandbox()` starts `posbridge sandbox` on a free port of 127.0.0.1 with the interpreter running
the tests, waits until its admin API answers, and terminates it on exit. The returned `SandboxProcess`
knows the URL, token and account, and wraps the admin API (faults, invoices, members, request counters).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.support.paths import REPO

START_TIMEOUT = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class SandboxProcess:
    """A running sandbox subprocess: its URL, credentials and admin API helpers."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, token: str, account: str,
                 stderr_path: Path) -> None:
        self.process = process
        self.url = url
        self.token = token
        self.account = account
        self._stderr_path = stderr_path
        self.admin = httpx.Client(base_url=url, timeout=10.0)

    # -- addresses a client under test is configured with ---------------------------------------------
    def member_url(self, member_id: str) -> str:
        return f"{self.url}/agora/member/{member_id}"

    @property
    def invoices_url(self) -> str:
        return f"{self.url}/agora/invoices"

    @property
    def params(self) -> dict[str, str]:
        """`_token` and `ow_account` query parameters for a cloud call."""
        return {"_token": self.token, "ow_account": self.account}

    # -- admin API ------------------------------------------------------------------------------------
    def faults(self, **faults: Any) -> dict[str, Any]:
        """Merge `faults` into the sandbox's faults (no arguments: read them). Returns the current faults."""
        response = self.admin.post("/sandbox/faults", json=faults) if faults else self.admin.get("/sandbox/faults")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def clear_faults(self) -> None:
        self.admin.delete("/sandbox/faults").raise_for_status()

    def invoices(self) -> list[dict[str, Any]]:
        response = self.admin.get("/sandbox/invoices")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def invoice(self, key: str) -> dict[str, Any] | None:
        """The admin summary of one invoice key, or None if the sandbox never saw it."""
        return next((item for item in self.invoices() if item["key"] == key), None)

    def invoice_bytes(self, key: str) -> bytes:
        response = self.admin.get(f"/sandbox/invoices/{key}")
        response.raise_for_status()
        return response.content

    def seed_member(self, member: dict[str, Any]) -> dict[str, Any]:
        response = self.admin.post("/sandbox/members", json=member)
        response.raise_for_status()
        result: dict[str, Any] = response.json()[0]
        return result

    def members(self) -> list[dict[str, Any]]:
        response = self.admin.get("/sandbox/members")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def requests(self) -> dict[str, Any]:
        """Cloud calls received: `{"member": n, "invoices": n, "other": n, "by_member": {id: n}}`."""
        response = self.admin.get("/sandbox/requests")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset(self) -> None:
        """Back to a fresh sandbox (initial members and balances, no invoices, faults or counts)."""
        self.admin.post("/sandbox/reset").raise_for_status()

    def stderr(self) -> str:
        return self._stderr_path.read_text(errors="replace")

    def close(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 5 s)."""
        self.admin.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextlib.contextmanager
def running_sandbox(
    token: str = "sbx-token", account: str = "demo", *, extra_args: Sequence[str] = ()
) -> Iterator[SandboxProcess]:
    """Start `posbridge sandbox` on a free port; yield once `GET /sandbox/faults` answers; stop it at exit.

    `extra_args` are passed to the command (for example `["--latency-ms", "200"]`). Raises `RuntimeError`
    with the process's stderr if it does not answer within 15 s.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.pop("POSBRIDGE_SANDBOX_TOKEN", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="posbridge-sandbox-") as tmp:
        stderr_path = Path(tmp) / "stderr.log"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "posbridge.cli", "sandbox", "--host", "127.0.0.1", "--port", str(port),
                 "--token", token, "--account", account, *extra_args],
                stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=REPO,
            )
        sandbox = SandboxProcess(process, url, token, account, stderr_path)
        try:
            _wait_until_ready(sandbox)
            yield sandbox
        finally:
            sandbox.close()


def _wait_until_ready(sandbox: SandboxProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if sandbox.process.poll() is not None:
            raise RuntimeError(
                f"the sandbox exited with {sandbox.process.returncode} before answering; stderr:\n{sandbox.stderr()}"
            )
        try:
            if sandbox.admin.get("/sandbox/faults", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the sandbox did not answer on {sandbox.url} within {START_TIMEOUT:.0f} s; "
                       f"stderr:\n{sandbox.stderr()}")


__all__ = ["SandboxProcess", "free_port", "running_sandbox"]
