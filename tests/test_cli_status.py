"""`posbridge status`: one screen in each state the bridge can be in, asked from the running daemon over HTTP
(or read from the database when no daemon answers), as a technician runs it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from posbridge.cli.status import render
from tests.support.daemon import DaemonProcess, invoice
from tests.support.paths import REPO
from tests.support.pty import PtyScanner


@pytest.fixture
def scanner() -> Iterator[PtyScanner]:
    with PtyScanner() as pty:
        yield pty


@pytest.fixture
def bridge(sandbox, scanner: PtyScanner, tmp_path: Path) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account, scanners=[
        {"name": "counter", "type": "serial", "port": scanner.path, "framing": "eol", "debounce": 0.5},
    ], overrides={"delivery": {"backoff_base": 0.05, "backoff_cap": 0.2, "auth_probe_interval": 0.2}})
    daemon.start()
    daemon.wait_for(lambda: any(s["connected"] for s in daemon.status()["scanners"]), what="scanner open")
    yield daemon
    daemon.stop()


def status(bridge: DaemonProcess, *args: str):
    return bridge.cli("status", *args)


def test_a_healthy_bridge_exits_0_and_shows_cloud_queue_scanner_and_last_scan(bridge, scanner) -> None:
    scanner.scan("OW7K2M9Q")
    bridge.wait_for(lambda: bridge.client.get("/v1/scans/last", params={"_token": bridge.local_token})
                    .status_code == 200, what="a scan")
    done = status(bridge)
    assert done.returncode == 0, done.stdout + done.stderr
    screen = done.stdout
    assert "daemon running for" in screen and bridge.url in screen
    assert "reachable" in screen and "UNREACHABLE" not in screen
    assert "0 pending" in screen and "needs a person  nothing" in screen
    assert "counter (serial): connected, 1 scans, last " in screen
    assert "OW7K2M9Q -> María José Núñez Peña, 120 points" in screen


def test_while_the_cloud_is_down_it_says_unreachable_and_counts_the_pending_invoice(bridge, sandbox) -> None:
    sandbox.faults(outage=True)
    assert bridge.post_invoice(invoice(1)).status_code == 202
    bridge.wait_for(lambda: bridge.status()["cloud"]["reachable"] is False, what="cloud unreachable")
    done = status(bridge)
    assert done.returncode == 1
    assert "UNREACHABLE" in done.stdout
    assert "1 pending (oldest received" in done.stdout


def test_when_the_token_is_refused_it_says_delivery_is_paused_why_and_the_fix(bridge, sandbox) -> None:
    sandbox.faults(auth_fail=True)
    bridge.post_invoice(invoice(2))
    bridge.wait_for(lambda: bridge.status()["delivery"]["paused"], what="delivery paused")
    done = status(bridge)
    assert done.returncode == 1
    assert "PAUSED" in done.stdout
    assert "401" in done.stdout
    assert "sudo posbridge token set --system" in done.stdout


def test_a_rejected_invoice_is_named_as_needing_a_person(bridge) -> None:
    unreadable = invoice(3)
    unreadable["Totals"]["GrossAmount"] = "twelve"
    bridge.post_invoice(unreadable)
    bridge.wait_for(lambda: bridge.status()["queue"]["rejected"] == 1, what="rejected")
    done = status(bridge)
    assert done.returncode == 1
    assert "needs a person  1 rejected invoice: posbridge queue list --state rejected" in done.stdout


def test_without_a_daemon_it_reads_the_database_and_says_so(bridge, sandbox) -> None:
    sandbox.faults(outage=True)
    bridge.post_invoice(invoice(4))
    bridge.stop()
    done = status(bridge)
    assert done.returncode == 3
    assert "the daemon is not answering" in done.stdout and "not running" in done.stdout
    assert "read from the database alone" in done.stdout
    assert "1 pending" in done.stdout


def test_json_keeps_epoch_numbers(bridge, sandbox) -> None:
    bridge.post_invoice(invoice(5))
    bridge.wait_for(lambda: bridge.status()["queue"]["sent"] == 1, what="delivered")
    done = status(bridge, "--json")
    view = json.loads(done.stdout)
    assert view["source"] == "daemon"
    delivered_at = view["status"]["delivery"]["last_delivery_at"]
    assert isinstance(delivered_at, float) and abs(delivered_at - time.time()) < 120


def test_piped_output_has_no_colour_but_a_terminal_gets_it(bridge, sandbox) -> None:
    sandbox.faults(outage=True)
    bridge.post_invoice(invoice(6))
    bridge.wait_for(lambda: bridge.status()["cloud"]["reachable"] is False, what="cloud unreachable")
    assert "\x1b[" not in status(bridge).stdout
    env = {k: v for k, v in bridge.env.items() if k != "NO_COLOR"}
    child = pexpect.spawn(sys.executable, ["-m", "posbridge.cli", "status", "--config", str(bridge.config_path)],
                          cwd=str(REPO), env=env, encoding="utf-8", timeout=30)
    child.expect(pexpect.EOF)
    assert "\x1b[31m" in child.before and "UNREACHABLE" in child.before


def test_the_screen_shows_outputs_when_the_daemon_reports_them_and_tolerates_their_absence() -> None:
    base = {"version": "9", "uptime_seconds": 5, "queue": {"pending": 0, "sent": 0, "rejected": 0},
            "cloud": {"reachable": True, "base_url": "https://c", "account": "a"}, "delivery": {}, "scanners": []}
    with_outputs = {**base, "outputs": [{"name": "till-keyboard", "type": "uinput", "connected": False,
                                         "last_error": "/dev/uinput: permission denied"}]}
    text, attention = render(with_outputs, None, "http://127.0.0.1:8080")
    assert "outputs         till-keyboard (uinput): NOT ready: /dev/uinput: permission denied" in text
    text, _ = render(base, None, "http://127.0.0.1:8080")
    assert "outputs" not in text and "none configured" in text
