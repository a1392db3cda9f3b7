"""`posbridge setup` driven as a technician would: with flags (--non-interactive) and through a terminal (a pty),
against the sandbox cloud over real HTTP, writing under a --root directory, with a stand-in systemctl that
records its calls (running the real one would change this machine)."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from posbridge import config as config_mod
from tests.support.paths import REPO
from tests.support.pty import PtyScanner
from tests.support.sandbox import free_port

STUB = """#!/bin/sh
# stand-in systemctl: records calls; "enabled"/"active" are files next to the log
dir=$(dirname "$0")
echo "$*" >> "$dir/calls"
case "$1" in
  is-enabled) if [ -e "$dir/enabled" ]; then echo enabled; exit 0; fi; echo disabled; exit 1 ;;
  is-active) if [ -e "$dir/active" ]; then echo active; exit 0; fi; echo inactive; exit 3 ;;
  enable) touch "$dir/enabled" ;;
  start|restart) touch "$dir/active" ;;
esac
exit 0
"""


@dataclass
class Till:
    root: Path
    systemd: Path
    env: dict[str, str]

    @property
    def config(self) -> Path:
        return self.root / "etc/posbridge/posbridge.toml"

    @property
    def credentials(self) -> Path:
        return self.root / "etc/posbridge/credentials"

    def calls(self) -> list[str]:
        log = self.systemd / "calls"
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return calls

    def setup(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        extra = ["--api-token-file", "-"] if token is not None else []
        return subprocess.run([sys.executable, "-m", "posbridge.cli", "setup", "--non-interactive", "--root",
                               str(self.root), *extra, *args], input=(token or "") + "\n", cwd=REPO,
                              env=self.env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def till(tmp_path: Path) -> Till:
    systemd = tmp_path / "systemd"
    systemd.mkdir()
    stub = systemd / "systemctl"
    stub.write_text(STUB)
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSBRIDGE_")}
    env.update(POSBRIDGE_SYSTEMCTL=str(stub), NO_COLOR="1")
    return Till(tmp_path / "root", systemd, env)


def first_run(till: Till, sandbox, *extra: str) -> subprocess.CompletedProcess[str]:
    return till.setup("--account", sandbox.account, "--cloud-url", sandbox.url, "--listen", "lan",
                      "--scanner", "serial:/dev/ttyACM9", *extra, token=sandbox.token)


def test_first_run_checks_the_token_then_writes_config_and_tokens_and_starts_the_service(till, sandbox) -> None:
    done = first_run(till, sandbox)
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ("account: demo (changed)", f"API token: new token checked with {sandbox.url}",
                 "listen: 0.0.0.0:8080, reachable from the shop's network (changed)", "local token: generated",
                 "scanner: type = 'serial', port = '/dev/ttyACM9'", "configuration: written",
                 "service: enabled at boot", "service: started"):
        assert step in done.stdout
    settings = config_mod.load(till.config)
    assert (settings.cloud.account, settings.cloud.base_url, settings.server.listen) == (
        "demo", sandbox.url, "0.0.0.0:8080")
    assert [(s.type, s.port) for s in settings.scanners] == [("serial", "/dev/ttyACM9")]
    assert "# Where the POS reaches the bridge." in till.config.read_text()  # the example's comments are kept
    cloud, local = till.credentials / "cloud-token", till.credentials / "local-token"
    assert cloud.read_text().strip() == sandbox.token
    assert stat.S_IMODE(cloud.stat().st_mode) == 0o600 and stat.S_IMODE(till.credentials.stat().st_mode) == 0o700
    assert f"/agora/invoices?_token={local.read_text().strip()}" in done.stdout
    assert till.calls() == ["is-enabled posbridge.service", "enable posbridge.service", "is-active posbridge.service",
                            "start posbridge.service", "is-active posbridge.service"]


def test_running_it_again_changes_nothing_and_does_not_restart(till, sandbox) -> None:
    first_run(till, sandbox)
    before = (till.config.read_bytes(), (till.credentials / "local-token").read_bytes())
    till.calls()
    done = till.setup()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "configuration: unchanged" in done.stdout and "tokens: unchanged" in done.stdout
    assert "local token: kept" in done.stdout and "stored token checked" in done.stdout
    assert "running; nothing changed, so it was not restarted" in done.stdout
    assert (till.config.read_bytes(), (till.credentials / "local-token").read_bytes()) == before
    assert not [c for c in till.calls() if c.split()[0] in ("start", "restart", "enable")]


def test_changing_one_answer_changes_only_that_key_and_restarts_once(till, sandbox) -> None:
    first_run(till, sandbox)
    before = till.config.read_text().splitlines()
    till.calls()
    done = till.setup("--listen", "till")
    assert done.returncode == 0, done.stdout + done.stderr
    after = till.config.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert changed == [('listen = "0.0.0.0:8080"', 'listen = "127.0.0.1:8080"')] and len(before) == len(after)
    assert "configuration: written ([server] listen)" in done.stdout
    assert [c for c in till.calls() if c.split()[0] in ("start", "restart")] == ["restart posbridge.service"]


def test_a_token_the_cloud_refuses_is_not_stored_and_nothing_is_written(till, sandbox) -> None:
    done = till.setup("--account", sandbox.account, "--cloud-url", sandbox.url, token="not-the-token")
    assert done.returncode == 1
    assert "refused the token" in done.stderr and "Nothing was stored" in done.stderr
    assert not till.config.exists() and not till.credentials.exists() and till.calls() == []


def test_an_account_the_cloud_does_not_know_is_refused(till, sandbox) -> None:
    done = till.setup("--account", "nosuchshop", "--cloud-url", sandbox.url, token=sandbox.token)
    assert done.returncode == 1
    assert "does not know the account 'nosuchshop'" in done.stderr and not till.config.exists()


def test_an_unreachable_cloud_is_said_and_nothing_is_stored(till) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = till.setup("--account", "demo", "--cloud-url", url, token="sometoken")
    assert done.returncode == 1
    assert f"could not check the token with {url}" in done.stderr and not till.credentials.exists()


@pytest.mark.parametrize(("args", "named"), [
    ([], "--account"),
    (["--account", "demo", "--listen", "everywhere"], "--listen"),
    (["--account", "demo", "--scanner", "usb-thing"], "--scanner"),
    (["--account", "shop with spaces"], "not an account subdomain"),
])
def test_bad_or_missing_answers_exit_2_naming_the_option(till, sandbox, args: list[str], named: str) -> None:
    done = till.setup("--cloud-url", sandbox.url, *args, token=sandbox.token)
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stderr and "Traceback" not in done.stderr
    assert not till.config.exists()


def test_without_a_terminal_and_without_non_interactive_it_says_how_to_script_it(till) -> None:
    done = subprocess.run([sys.executable, "-m", "posbridge.cli", "setup", "--root", str(till.root)], cwd=REPO,
                          env=till.env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "--non-interactive" in done.stderr


# --- through a terminal ----------------------------------------------------------------------------------------

@pytest.fixture
def scanner() -> Iterator[PtyScanner]:
    with PtyScanner() as pty:
        yield pty


def _as_in_a_terminal() -> None:
    # Ctrl+C works as in a technician's terminal even when the suite itself was started with SIGINT ignored
    # (a background job of a non-interactive shell, nohup): an ignored SIGINT is inherited and Python then
    # installs no KeyboardInterrupt handler, so the wizard would never see the Ctrl+C
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(till: Till, sandbox) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "posbridge.cli", "setup", "--root", str(till.root),
                                          "--cloud-url", sandbox.url, "--scan-timeout", "30"],
                         cwd=str(REPO), env=till.env, encoding="utf-8", timeout=60, dimensions=(50, 160),
                         preexec_fn=_as_in_a_terminal)


def choose(child: pexpect.spawn, label: str, question: str) -> None:
    """Answer a numbered question with the number of the option whose text contains ``label``."""
    child.expect(question)
    number = re.search(rf"(\d+)\) [^\n]*{re.escape(label)}", child.before).group(1)
    child.sendline(number)


def test_the_wizard_in_a_terminal_reaches_a_test_scan_showing_the_member(till, sandbox, scanner) -> None:
    child = spawn(till, sandbox)
    child.expect(r"Omniwallet account")
    child.sendline("demo")
    child.expect(r"API token.*not shown")
    child.sendline(sandbox.token)
    child.expect("API token: new token checked")
    choose(child, "only this till", r"Where is the POS\?")
    child.expect("purchase submission: +http://127.0.0.1:8080/agora/invoices")
    choose(child, "another device", r"Which scanner reads the cards\?")
    child.expect(r"Device \(serial")
    child.sendline(f"serial:{scanner.path}")
    child.expect("Scan a loyalty card now")
    scanner.scan("]Q1https://mystore.omniwallet.cloud/c/OW7K2M9Q")
    child.expect("test scan: read from till-scanner: member OW7K2M9Q: María José Núñez Peña, 120 points")
    child.expect("service: started")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert sandbox.token not in (till.config.read_text())  # the token is never in the configuration
    assert config_mod.load(till.config).scanners[0].port == scanner.path


def test_ctrl_c_in_the_middle_changes_nothing(till, sandbox) -> None:
    child = spawn(till, sandbox)
    child.expect(r"Omniwallet account")
    child.sendline("demo")
    child.expect(r"API token.*not shown")
    child.sendline(sandbox.token)
    child.expect(r"Where is the POS\?")
    child.sendintr()
    child.expect("nothing was changed")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert not till.config.exists() and not till.credentials.exists()
