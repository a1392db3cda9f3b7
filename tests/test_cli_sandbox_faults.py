"""`posbridge sandbox faults` against a running sandbox (standalone, and embedded in `posbridge run --sandbox`),
and the command line working against `make run` with the configuration it writes next to its state."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.paths import REPO
from tests.support.sandbox import free_port


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "posbridge.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_faults_show_a_healthy_sandbox(sandbox) -> None:
    done = cli("sandbox", "faults", "--url", sandbox.url)
    assert done.returncode == 0, done.stderr
    assert "healthy: no faults" in done.stdout and "outage        off" in done.stdout


def test_faults_set_only_what_is_given_and_the_sandbox_applies_it(sandbox) -> None:
    cli("sandbox", "faults", "--url", sandbox.url, "--latency-ms", "150")
    done = cli("sandbox", "faults", "--url", sandbox.url, "--outage", "--error-rate", "0.5", "--retry-after", "7")
    assert done.returncode == 0, done.stderr
    assert "faults active" in done.stdout
    assert sandbox.faults() == {**sandbox.faults(), "latency_ms": 150, "outage": True, "error_rate": 0.5,
                                "retry_after": 7}
    with pytest.raises(httpx.TransportError):  # the outage is real: the cloud call gets no answer
        httpx.get(sandbox.member_url("OW7K2M9Q"), params=sandbox.params, timeout=5)


def test_faults_clear_brings_the_cloud_back(sandbox) -> None:
    sandbox.faults(auth_fail=True, latency_ms=50)
    done = cli("sandbox", "faults", "--url", sandbox.url, "--reset", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["auth_fail"] is False and sandbox.faults()["latency_ms"] == 0
    assert httpx.get(sandbox.member_url("OW7K2M9Q"), params=sandbox.params, timeout=5).status_code == 200


@pytest.mark.parametrize("args", [["--error-rate", "2"], ["--error-status", "200"], ["--latency-ms", "-1"]])
def test_faults_the_sandbox_refuses_exit_2_naming_the_value(sandbox, args: list[str]) -> None:
    done = cli("sandbox", "faults", "--url", sandbox.url, *args)
    assert done.returncode == 2
    assert "refused these faults" in done.stderr and "Traceback" not in done.stderr
    assert sandbox.faults()["error_rate"] == 0.0


def test_faults_without_a_sandbox_say_where_they_looked() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = cli("sandbox", "faults", "--url", url)
    assert done.returncode == 1
    assert f"no sandbox answers at {url}" in done.stderr


def test_the_standalone_sandbox_still_serves_with_its_options(sandbox) -> None:
    assert sandbox.faults()["outage"] is False  # `posbridge sandbox --host --port --token` started it


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    """`posbridge run --sandbox` as `make run` starts it, on a free port; yields (process, banner, state dir)."""
    port = free_port()
    base = tmp_path / "base.toml"
    base.write_text(f'# my settings\n[server]\nlisten = "127.0.0.1:{port}"\n')
    state = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-m", "posbridge.cli", "run", "--sandbox", "--config", str(base), "--state-dir", str(state),
         "--log-format", "text"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    banner = []
    deadline = time.monotonic() + 30
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        assert line, "run --sandbox exited:\n" + "".join(banner)
        banner.append(line)
        if line.startswith("Stop with Ctrl+C"):
            break
    try:
        yield process, "".join(banner), state
    finally:
        process.terminate()
        process.wait(20)


def test_make_run_prints_the_line_that_points_the_command_line_at_it(make_run) -> None:
    _, banner, state = make_run
    config = (state / "posbridge.toml").resolve()
    assert f"export POSBRIDGE_CONFIG={config}" in banner
    text = config.read_text()
    assert "# my settings" in text and str(state.resolve() / "posbridge.db") in text


def test_the_command_line_works_against_make_run_as_printed(make_run) -> None:
    _, banner, state = make_run
    env = {"POSBRIDGE_CONFIG": re.search(r"export POSBRIDGE_CONFIG=(\S+)", banner).group(1)}
    local = json.loads((state / "sandbox-tokens.json").read_text())["local"]
    listen = re.search(r"http://(127\.0\.0\.1:\d+)/agora/invoices", banner).group(1)
    assert cli("sandbox", "faults", "--outage", env=env).returncode == 0  # the embedded sandbox, found
    answer = httpx.post(f"http://{listen}/agora/invoices", params={"_token": local}, timeout=30,
                        json={"Serie": "MR", "Number": 1, "Totals": {"GrossAmount": 3}})
    assert answer.json()["status"] == "queued"
    queued = cli("queue", "status", env=env)
    assert "pending:  1" in queued.stdout, queued.stderr
    shown = cli("queue", "show", str(answer.json()["id"]), env=env)
    assert json.loads(shown.stdout)["key"] == "doc:Serie=MR;Number=1"
    screen = cli("status", env=env)
    assert screen.returncode == 1 and "UNREACHABLE" in screen.stdout, screen.stdout + screen.stderr
    assert cli("sandbox", "faults", "--no-outage", env=env).returncode == 0
    deadline = time.monotonic() + 30
    while "pending:  0" not in cli("queue", "status", env=env).stdout:
        assert time.monotonic() < deadline, "the queued invoice was not delivered after the outage ended"
        time.sleep(0.5)
