"""`posbridge token ...` as a technician runs it, with a small HTTP server as the cloud.

The keyring backend is a real one: tests/support/memory_keyring.py, or keyring's own "no backend". A few
tests run the CLI as a subprocess with the backend chosen by ``$PYTHON_KEYRING_BACKEND``, exactly as on a
till; the rest run the same commands in-process (typer's CliRunner, backend set with ``keyring.set_keyring``)
because each subprocess pays ~1 s of imports.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import keyring
import pytest
from keyring.backends import fail
from typer.testing import CliRunner

from posbridge import secrets
from posbridge.cli.root import app
from tests.support.memory_keyring import BrokenKeyring, FileKeyring

REPO = Path(__file__).resolve().parents[1]
CLOUD = "ow_live_9d2c41f07be34a55"
FILE_BACKEND = "tests.support.memory_keyring.FileKeyring"
NO_BACKEND = "keyring.backends.fail.Keyring"
BROKEN_BACKEND = "tests.support.memory_keyring.BrokenKeyring"


@dataclass
class Shell:
    """A technician's shell: clean environment, a keyring backend, a private credentials directory."""

    tmp: Path
    backend: str = FILE_BACKEND
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def keyring_file(self) -> Path:
        return self.tmp / "keyring.json"

    @property
    def credentials(self) -> Path:
        return self.tmp / "credentials"

    def keyring(self) -> dict[str, str]:
        if not self.keyring_file.exists():
            return {}
        return json.loads(self.keyring_file.read_text()).get("posbridge", {})

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.tmp),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO),
            "PYTHON_KEYRING_BACKEND": self.backend,
            "POSBRIDGE_TEST_KEYRING_FILE": str(self.keyring_file),
            "POSBRIDGE_TEST_KEYRING_BROKEN": "1",
            "POSBRIDGE_CREDENTIALS_DIR": str(self.credentials),
            "POSBRIDGE_DEV": "1",
            **self.extra_env,
        }
        return subprocess.run(
            [sys.executable, "-m", "posbridge.cli", "token", *args],
            input=stdin, capture_output=True, text=True, env=env, cwd=self.tmp, timeout=60,
        )


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class InProcessShell(Shell):
    """The same commands through typer's CliRunner, in this process; same environment, same backends."""

    monkeypatch: pytest.MonkeyPatch

    def run(self, *args: str, stdin: str = "") -> Result:  # type: ignore[override]
        backends = {FILE_BACKEND: lambda: FileKeyring(self.keyring_file), NO_BACKEND: fail.Keyring,
                    BROKEN_BACKEND: BrokenKeyring}
        previous = keyring.get_keyring()
        with self.monkeypatch.context() as patch:
            for name in ("CREDENTIALS_DIRECTORY", "INVOCATION_ID", "POSBRIDGE_CONFIG", "POSBRIDGE_CLOUD_TOKEN",
                         "POSBRIDGE_LOCAL_TOKEN"):
                patch.delenv(name, raising=False)
            for name, value in {"POSBRIDGE_CREDENTIALS_DIR": str(self.credentials), "POSBRIDGE_DEV": "1",
                                **self.extra_env}.items():
                patch.setenv(name, value)
            patch.setattr(secrets, "_env_warned", True)
            keyring.set_keyring(backends[self.backend]())
            try:
                result = CliRunner().invoke(app, ["token", *args], input=stdin, catch_exceptions=False)
            finally:
                keyring.set_keyring(previous)
        return Result(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InProcessShell:
    runner = InProcessShell(tmp_path)
    runner.monkeypatch = monkeypatch
    return runner


@pytest.fixture
def subprocess_shell(tmp_path: Path) -> Shell:
    return Shell(tmp_path)


class FakeCloud:
    """Answers /agora/member/... by token: one status per known token; records every query."""

    def __init__(self, statuses: dict[str, int]) -> None:
        self.statuses = statuses
        self.queries: list[dict[str, list[str]]] = []
        self.paths: list[str] = []
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                cloud.paths.append(parts.path)
                cloud.queries.append(query)
                status = cloud.statuses.get(query.get("_token", [""])[0], 401)
                body = b'{"error": "x"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cloud() -> Iterator[FakeCloud]:
    server = FakeCloud({CLOUD: 404, "token-for-200": 200, "revoked": 401, "wrong-account": 403, "busy": 503})
    yield server
    server.close()


def write_config(tmp: Path, base_url: str, account: str = "demo-shop") -> Path:
    path = tmp / "posbridge.toml"
    path.write_text(f'[cloud]\nbase_url = "{base_url}"\naccount = "{account}"\ntimeout = 5\nconnect_timeout = 2\n')
    return path


def test_set_reads_one_line_from_stdin_and_stores_it_in_the_keyring(subprocess_shell: Shell) -> None:
    shell = subprocess_shell
    result = shell.run("set", stdin=CLOUD + "\n")
    assert result.returncode == 0, result.stderr
    assert shell.keyring() == {"cloud-token": CLOUD}
    assert "cloud token stored in the system keyring (service 'posbridge', user 'cloud-token')" in result.stdout
    assert CLOUD not in result.stdout + result.stderr


def test_set_local_stores_the_local_token_separately(shell: Shell) -> None:
    assert shell.run("set", "--local", stdin="pos-local-token-1\n").returncode == 0
    assert shell.keyring() == {"local-token": "pos-local-token-1"}


def test_set_with_nothing_on_stdin_fails_and_stores_nothing(shell: Shell) -> None:
    result = shell.run("set", stdin="\n")
    assert result.returncode == 1
    assert "no cloud token given" in result.stderr
    assert shell.keyring() == {}


@pytest.mark.parametrize("backend", [NO_BACKEND, BROKEN_BACKEND], ids=["no-backend", "broken-backend"])
def test_set_without_a_keyring_explains_the_credential_file_and_exits_1(tmp_path: Path, backend: str) -> None:
    result = Shell(tmp_path, backend=backend).run("set", stdin=CLOUD + "\n")
    assert result.returncode == 1
    assert "cannot store the cloud API token in the system keyring" in result.stderr
    assert "sudo posbridge token set --system" in result.stderr
    assert "systemd-creds encrypt --name=cloud-token" in result.stderr
    assert "Traceback" not in result.stderr and CLOUD not in result.stderr


def test_set_system_writes_a_private_credential_file(shell: Shell) -> None:
    result = shell.run("set", "--system", stdin=CLOUD + "\n")
    assert result.returncode == 0, result.stderr
    path = shell.credentials / "cloud-token"
    assert path.read_text() == CLOUD + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"stored in the credential file {path}" in result.stdout
    assert shell.keyring() == {}


def test_check_without_any_token_says_where_it_looked(shell: Shell) -> None:
    result = shell.run("check")
    assert result.returncode == 1
    assert "no cloud API token" in result.stderr and "posbridge token set --system" in result.stderr


def test_check_reports_the_source_and_accepts_a_token_the_cloud_knows(
    subprocess_shell: Shell, cloud: FakeCloud
) -> None:
    shell = subprocess_shell
    shell.run("set", stdin=CLOUD)
    config = write_config(shell.tmp, cloud.url)
    result = shell.run("check", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cloud token: from the system keyring (service 'posbridge', user 'cloud-token')" in result.stdout
    assert "token accepted (HTTP 404)" in result.stdout
    assert "_token=***&ow_account=demo-shop" in result.stdout
    assert CLOUD not in result.stdout + result.stderr
    assert cloud.paths == ["/agora/member/__posbridge_token_check__"]
    assert cloud.queries == [{"_token": [CLOUD], "ow_account": ["demo-shop"]}]


def test_check_names_a_credential_file_that_shadows_the_keyring(shell: Shell, cloud: FakeCloud) -> None:
    shell.run("set", stdin="revoked")
    shell.run("set", "--system", stdin=CLOUD)
    result = shell.run("check", "--config", str(write_config(shell.tmp, cloud.url)))
    assert result.returncode == 0
    assert f"from the credential file {shell.credentials / 'cloud-token'}" in result.stdout
    assert "also present, not used: system keyring" in result.stdout


@pytest.mark.parametrize(
    ("token", "code", "expected"),
    [
        ("token-for-200", 0, "token accepted (HTTP 200)"),
        ("revoked", 1, "token refused: the cloud answered HTTP 401"),
        ("wrong-account", 1, "token refused: the cloud answered HTTP 403"),
        ("busy", 1, "the cloud answered HTTP 503; cannot tell"),
    ],
)
def test_check_turns_the_clouds_answer_into_a_verdict(
    shell: Shell, cloud: FakeCloud, token: str, code: int, expected: str
) -> None:
    shell.extra_env["POSBRIDGE_CLOUD_TOKEN"] = token
    result = shell.run("check", "--config", str(write_config(shell.tmp, cloud.url)))
    assert result.returncode == code
    assert expected in result.stdout + result.stderr
    assert "from the environment variable POSBRIDGE_CLOUD_TOKEN" in result.stdout


def test_check_reports_an_unreachable_cloud(shell: Shell, cloud: FakeCloud) -> None:
    url = cloud.url
    cloud.close()  # nothing listens on that port any more
    shell.extra_env["POSBRIDGE_CLOUD_TOKEN"] = CLOUD
    result = shell.run("check", "--config", str(write_config(shell.tmp, url)))
    assert result.returncode == 1
    assert "cloud unreachable" in result.stderr
    assert CLOUD not in result.stdout + result.stderr


def test_check_local_only_reports_the_source(shell: Shell) -> None:
    shell.extra_env["POSBRIDGE_LOCAL_TOKEN"] = "pos-local-token-1"
    result = shell.run("check", "--local")
    assert result.returncode == 0
    assert result.stdout.strip() == "local token: from the environment variable POSBRIDGE_LOCAL_TOKEN"


def test_delete_removes_the_keyring_entry_and_is_harmless_twice(shell: Shell) -> None:
    shell.run("set", stdin=CLOUD)
    first = shell.run("delete")
    assert first.returncode == 0 and "cloud token deleted from the system keyring" in first.stdout
    assert shell.keyring() == {}
    second = shell.run("delete")
    assert second.returncode == 0 and "nothing to delete" in second.stdout


def test_delete_without_a_keyring_exits_1_with_the_credential_file_to_remove(shell: InProcessShell) -> None:
    shell.backend = NO_BACKEND
    result = shell.run("delete")
    assert result.returncode == 1
    assert "sudo rm" in result.stderr and "cloud-token" in result.stderr


def test_delete_system_removes_the_credential_file(shell: Shell) -> None:
    shell.run("set", "--local", "--system", stdin="pos-local-token-1")
    result = shell.run("delete", "--local", "--system")
    assert result.returncode == 0, result.stderr
    assert not (shell.credentials / "local-token").exists()


def test_generate_local_stores_the_token_and_prints_it_once_on_stdout(shell: Shell) -> None:
    result = shell.run("generate", "--local")
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip()
    assert len(printed) == 43 and "\n" not in printed
    assert shell.keyring() == {"local-token": printed}
    assert "?_token=" in result.stderr and printed not in result.stderr


def test_generate_refuses_to_replace_an_existing_local_token_without_force(shell: Shell) -> None:
    first = shell.run("generate", "--local").stdout.strip()
    again = shell.run("generate", "--local")
    assert again.returncode == 1 and "--force" in again.stderr and again.stdout == ""
    assert shell.keyring() == {"local-token": first}
    forced = shell.run("generate", "--local", "--force")
    assert forced.returncode == 0
    assert shell.keyring() == {"local-token": forced.stdout.strip()} != {"local-token": first}


def test_generate_without_local_is_a_usage_error(shell: Shell) -> None:
    result = shell.run("generate")
    assert result.returncode == 2
    assert "comes from Omniwallet" in result.stderr


def test_generate_without_a_keyring_still_prints_the_token_and_how_to_store_it(tmp_path: Path) -> None:
    result = Shell(tmp_path, backend=NO_BACKEND).run("generate", "--local")
    assert result.returncode == 0
    assert len(result.stdout.strip()) == 43
    assert "NOT stored" in result.stderr and "sudo posbridge token set --local --system" in result.stderr


def test_generate_local_system_writes_the_credential_file(shell: Shell) -> None:
    result = shell.run("generate", "--local", "--system")
    assert result.returncode == 0, result.stderr
    assert (shell.credentials / "local-token").read_text().strip() == result.stdout.strip()
