"""Delivery never loops, whatever the cloud says, and the bridge tells the truth about the cloud.

The daemon runs as a process against the sandbox cloud over real HTTP; where one invoice must be answered
differently from the others (a ``Retry-After`` for it alone, a header the sandbox cannot send), a small proxy
in front of the sandbox answers it and forwards the rest, and counts every attempt per invoice key.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.cloud_proxy import CloudProxy
from tests.support.daemon import DaemonProcess, bridge_key, invoice

SHARE_SANDBOX = True  # see conftest.sandbox

JSON = {"Content-Type": "application/json"}


def accepted(sandbox) -> dict[str, dict[str, Any]]:
    return {entry["key"]: entry for entry in sandbox.invoices()}


def metric(daemon: DaemonProcess, name: str) -> float:
    text = daemon.client.get("/metrics").text
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


@pytest.fixture
def daemon_factory(sandbox, tmp_path: Path):
    started: list[DaemonProcess] = []

    def make(cloud_url: str | None = None, **overrides: Any) -> DaemonProcess:
        workdir = tmp_path / f"d{len(started)}"
        workdir.mkdir()
        daemon = DaemonProcess(workdir, cloud_url or sandbox.url, sandbox.token, sandbox.account,
                               overrides=overrides or None)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.stop()


# -- Retry-After ---------------------------------------------------------------------------------------------


def test_a_retry_after_that_is_not_a_number_is_ignored_with_one_log_line_and_the_invoices_back_off(
        sandbox, daemon_factory):
    cloud_ok = False

    def rule(key: str):
        if cloud_ok:
            return None
        return 503, {**JSON, "Retry-After": "²"}, b'{"error": "maintenance"}'  # "²".isdigit() is True

    with CloudProxy(sandbox.url, rule) as proxy:
        daemon = daemon_factory(proxy.url).start()
        started = time.monotonic()
        keys = {f"T1-{n}" for n in range(1, 5)}  # as the sandbox files them
        for number in range(1, 5):
            assert daemon.post_invoice(invoice(number)).status_code == 202
        daemon.wait_for(lambda: max(proxy.attempts[bridge_key(n)] for n in range(1, 5)) >= 3, timeout=30,
                        what="a few retries")
        attempts, elapsed = proxy.total(), time.monotonic() - started
        # backoff (base 0.2 s, cap 2 s, one probe at a time while the cloud is down) allows a few per second;
        # the loop this replaces made thousands
        assert attempts <= 8 + 10 * elapsed, (attempts, elapsed)
        assert daemon.log().count("neither a number of seconds nor an HTTP date") == 1
        cloud_ok = True
        daemon.wait_for(lambda: keys <= set(accepted(sandbox)), timeout=30, what="delivered")
        assert all(accepted(sandbox)[key]["accepted"] == 1 for key in keys)


def test_one_invoices_retry_after_holds_only_that_invoice(sandbox, daemon_factory):
    def rule(key: str):
        if key == bridge_key(1):
            return 429, {**JSON, "Retry-After": "3600"}, b'{"error": "slow down for this one"}'
        return None

    with CloudProxy(sandbox.url, rule) as proxy:
        daemon = daemon_factory(proxy.url).start()
        assert daemon.post_invoice(invoice(1)).status_code == 202
        others = {f"T1-{n}" for n in range(2, 6)}
        for number in range(2, 6):
            assert daemon.post_invoice(invoice(number)).status_code in (200, 202)
        daemon.wait_for(lambda: others <= set(accepted(sandbox)), timeout=30, what="the others delivered")
        assert proxy.count(bridge_key(1)) == 1, "T1-1 waits the hour it was asked to"
        status = daemon.status()
        assert status["queue"]["pending"] == 1
        assert status["delivery"]["next_attempt_not_before"] is None  # nothing holds the whole queue


def test_retry_after_on_every_invoice_holds_the_whole_account(sandbox, daemon_factory):
    def rule(key: str):
        return 429, {**JSON, "Retry-After": "3600"}, b'{"error": "account throttled"}'

    with CloudProxy(sandbox.url, rule) as proxy:
        daemon = daemon_factory(proxy.url).start()
        keys = [bridge_key(n) for n in range(1, 7)]
        for number in range(1, 7):
            assert daemon.post_invoice(invoice(number)).status_code == 202
        status = daemon.wait_for(lambda: (s := daemon.status())["delivery"]["hold_reason"] and s,
                                 what="the account held")
        assert status["delivery"]["next_attempt_not_before"] > time.time() + 3000
        assert "Retry-After" in status["delivery"]["hold_reason"]
        assert all(proxy.count(key) <= 1 for key in keys), dict(proxy.attempts)
        assert proxy.total() < len(keys), "once the account is held, the rest wait too"


# -- what the bridge says about the cloud -------------------------------------------------------------------


def test_status_and_metrics_give_the_same_reachability_and_see_delivery_recover(sandbox, daemon_factory):
    daemon = daemon_factory().start()
    sandbox.faults(outage=True)
    assert daemon.post_invoice(invoice(1)).status_code == 202
    cloud = daemon.wait_for(lambda: (c := daemon.status()["cloud"])["reachable"] is False and c, what="down")
    assert metric(daemon, "posbridge_cloud_reachable") == 0
    assert cloud["since"] and cloud["summary"] == f"cloud unreachable since {cloud['since_text']}"
    assert cloud["last_failure"]
    sandbox.faults(outage=False)
    daemon.wait_for(lambda: daemon.status()["queue"]["sent"] == 1, timeout=30, what="delivered")
    # no member look-up happened: delivery's own contact is what status and metrics show
    assert daemon.status()["cloud"]["reachable"] is True
    assert metric(daemon, "posbridge_cloud_reachable") == 1


def test_a_refused_token_is_found_at_start_up_and_pauses_delivery_at_once(sandbox, daemon_factory):
    daemon = daemon_factory()
    daemon.cloud_token = "not-the-token"
    daemon.env["POSBRIDGE_CLOUD_TOKEN"] = "not-the-token"
    daemon.start()
    status = daemon.status()
    assert status["delivery"]["paused"] is True and status["delivery"]["paused_cause"] == "token"
    assert "cloud token check at start-up: token refused" in daemon.log()
    assert daemon.post_invoice(invoice(1)).status_code == 202
    assert sandbox.requests()["invoices"] == 0, "no invoice is sent with a token the cloud refused"


def test_invoices_held_by_a_401_pause_go_out_as_soon_as_the_daemon_restarts_with_a_working_token(
        sandbox, daemon_factory):
    daemon = daemon_factory(delivery={"auth_probe_interval": "1m"}).start()
    sandbox.faults(auth_fail=True)
    keys = {f"T1-{n}" for n in range(1, 6)}
    for number in range(1, 6):
        assert daemon.post_invoice(invoice(number)).status_code == 202
    daemon.wait_for(lambda: daemon.status()["delivery"]["paused"], what="paused")
    assert daemon.terminate() == 0
    sandbox.faults(auth_fail=False)
    daemon.start()
    assert "cloud token check at start-up: token accepted" in daemon.log()
    # well inside the one-minute probe interval: nothing waits for the pause that ended
    daemon.wait_for(lambda: daemon.status()["queue"]["sent"] == 5, timeout=30, what="all sent")
    assert all(accepted(sandbox)[key]["accepted"] == 1 for key in keys)


# -- log lines -----------------------------------------------------------------------------------------------


def test_each_invoice_ends_in_one_info_line_with_its_key_and_masked_member_and_retries_stay_quiet(
        sandbox, daemon_factory):
    started = time.monotonic()
    daemon = daemon_factory().start()
    sandbox.faults(error_rate=1.0, error_status=503)
    assert daemon.post_invoice(invoice(1)).status_code == 202
    daemon.wait_for(lambda: sandbox.requests()["invoices"] >= 4, timeout=30, what="several failed attempts")
    sandbox.faults(error_rate=0.0)
    daemon.wait_for(lambda: daemon.status()["queue"]["sent"] == 1, timeout=30, what="sent")
    unreadable = invoice(2)
    unreadable["Totals"]["GrossAmount"] = "twelve"
    assert daemon.post_invoice(unreadable).status_code == 422  # the cloud's refusal, relayed within the deadline
    daemon.wait_for(lambda: daemon.status()["queue"]["rejected"] == 1, what="rejected")
    log = daemon.log()
    sent = [line for line in log.splitlines() if f"invoice {bridge_key(1)} " in line and " sent:" in line]
    assert len(sent) == 1 and " INFO " in sent[0], sent
    assert "member ****2M9Q" in sent[0] and "attempts" in sent[0]
    rejected = [line for line in log.splitlines() if f"invoice {bridge_key(2)} " in line and "rejected" in line]
    assert len(rejected) == 1 and "member ****2M9Q" in rejected[0]
    assert "OW7K2M9Q" not in log
    minutes = (time.monotonic() - started) / 60
    assert 1 <= log.count("invoices are not being delivered") <= 1 + minutes, "retries: a line a minute at most"
