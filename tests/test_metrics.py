"""`/metrics` of the daemon process after a small day of real traffic against the sandbox cloud.

Each metric the operations guide promises is read back with a value that traffic caused, and no label anywhere
carries a member id or a card's text (labels are small fixed sets; a card number would be one series per customer).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from posbridge import __version__
from tests.support.daemon import DaemonProcess, invoice
from tests.support.sandbox import SandboxProcess

MEMBER = "OW7K2M9Q"
UNKNOWN = "ZQ4455AB"
CARD = f"]Q1https://wallet.example/card?id={MEMBER}"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


SHARE_SANDBOX = True  # see conftest.sandbox


@pytest.fixture
def bridge(sandbox: SandboxProcess, tmp_path: Path) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account,
                           overrides={"members": {"timeout": 0.5}},
                           scanners=[{"type": "stdin", "name": "till", "debounce": 0}])
    daemon.start(stdin=subprocess.PIPE)
    yield daemon
    daemon.stop()


def scrape(bridge: DaemonProcess) -> tuple[str, Samples]:
    response = bridge.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scan(bridge: DaemonProcess, text: str) -> None:
    assert bridge.proc is not None and bridge.proc.stdin is not None
    bridge.proc.stdin.write(text.encode() + b"\n")
    bridge.proc.stdin.flush()


def test_a_day_of_traffic_shows_in_every_metric_without_member_ids_in_labels(
        bridge: DaemonProcess, sandbox: SandboxProcess) -> None:
    # online: one invoice the cloud takes, one it refuses (422), member look-ups, one scan with an AIM prefix
    assert bridge.post_invoice(invoice(1)).status_code == 200
    unreadable = invoice(2)
    unreadable["Totals"]["GrossAmount"] = "twelve"
    assert bridge.post_invoice(unreadable).status_code == 422  # the cloud's refusal, within the inline deadline
    assert bridge.post_invoice(invoice(1)).status_code == 200  # the POS resends: a duplicate
    assert bridge.get_member(MEMBER).headers["x-posbridge-cache"] == "fresh"
    assert bridge.get_member(UNKNOWN).status_code == 404
    scan(bridge, CARD)
    bridge.wait_for(lambda: value(scrape(bridge)[1], "posbridge_scans_total", source="till", symbology="qr") == 1,
                    what="the scan counted")
    bridge.wait_for(lambda: bridge.status()["queue"]["rejected"] == 1, what="the 422 recorded")
    # outage: the cached member is served stale, an unknown one is a miss, an invoice queues
    sandbox.faults(outage=True)
    assert bridge.get_member(MEMBER).headers["x-posbridge-cache"] == "stale"
    assert bridge.get_member("ZQ0000CD").status_code == 503
    assert bridge.post_invoice(invoice(3)).status_code == 202
    time.sleep(1.2)  # the pending invoice ages; the replayer retries at least once against the outage

    text, samples = scrape(bridge)

    assert value(samples, "posbridge_invoices_received_total", result="stored") == 3
    assert value(samples, "posbridge_invoices_received_total", result="duplicate") == 1
    assert value(samples, "posbridge_invoices_sent_total") == 1
    assert value(samples, "posbridge_invoices_rejected_total") == 1
    assert value(samples, "posbridge_queue_depth", state="pending") == 1
    assert value(samples, "posbridge_queue_depth", state="sent") == 1
    assert value(samples, "posbridge_queue_depth", state="rejected") == 1
    assert value(samples, "posbridge_queue_oldest_pending_age_seconds") >= 1
    assert value(samples, "posbridge_delivery_attempts_total", result="sent") == 1
    assert value(samples, "posbridge_delivery_attempts_total", result="rejected") == 1
    assert value(samples, "posbridge_delivery_attempts_total", result="retry") >= 1
    attempts = sum(v for (name, _), v in samples.items() if name == "posbridge_delivery_attempts_total")
    assert value(samples, "posbridge_delivery_duration_seconds_count") == attempts
    assert value(samples, "posbridge_delivery_duration_seconds_sum") > 0
    assert value(samples, "posbridge_delivery_duration_seconds_bucket", le="+Inf") == attempts
    assert value(samples, "posbridge_cloud_errors_total", **{"class": "rejected"}) == 1
    assert value(samples, "posbridge_cloud_errors_total", **{"class": "unavailable"}) >= 1
    assert value(samples, "posbridge_cloud_reachable") == 0
    assert value(samples, "posbridge_member_lookups_total", result="fresh") == 2  # the POS's and the scan's
    assert value(samples, "posbridge_member_lookups_total", result="stale") == 1
    assert value(samples, "posbridge_member_lookups_total", result="miss") == 1
    assert value(samples, "posbridge_member_lookups_total", result="not_found") == 1
    assert value(samples, "posbridge_scans_total", source="till", symbology="qr") == 1
    assert value(samples, "posbridge_scanner_connected", scanner="till") == 1
    assert value(samples, "posbridge_build_info", version=__version__,
                 python=".".join(map(str, __import__("sys").version_info[:3]))) == 1

    names = {name for name, _ in samples}
    assert all(name.startswith("posbridge_") for name in names), names
    assert not any(name.endswith("_created") for name in names), "created series are disabled"
    labels = {v for _, pairs in samples for _, v in pairs}
    for secret in (MEMBER, UNKNOWN, "ZQ0000CD", "wallet.example", bridge.local_token, bridge.cloud_token):
        assert not any(secret in label for label in labels), (secret, labels)
        assert secret not in text


def test_refused_token_shows_as_paused_delivery_and_auth_errors(bridge: DaemonProcess,
                                                                sandbox: SandboxProcess) -> None:
    sandbox.faults(auth_fail=True)
    assert bridge.post_invoice(invoice(9)).status_code == 202
    bridge.wait_for(lambda: value(scrape(bridge)[1], "posbridge_delivery_paused") == 1, what="paused")
    _, samples = scrape(bridge)
    assert value(samples, "posbridge_cloud_errors_total", **{"class": "auth"}) >= 1
    assert value(samples, "posbridge_delivery_attempts_total", result="paused") >= 1
    assert value(samples, "posbridge_invoices_rejected_total") == 0
    assert value(samples, "posbridge_queue_depth", state="pending") == 1


def test_labels_exist_at_zero_before_any_traffic(bridge: DaemonProcess) -> None:
    """A dashboard reads 0, not "no data", on a till that has not sold anything yet."""
    _, samples = scrape(bridge)
    for result in ("fresh", "stale", "miss", "rejected"):
        assert ("posbridge_member_lookups_total", (("result", result),)) in samples
    for name in ("unavailable", "auth", "rejected"):
        assert ("posbridge_cloud_errors_total", (("class", name),)) in samples
    assert value(samples, "posbridge_queue_depth", state="pending") == 0
