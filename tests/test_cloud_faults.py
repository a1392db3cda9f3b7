"""A misbehaving cloud cannot freeze or bloat the bridge (issue 9, section 4).

The daemon runs as a real process; the cloud is :class:`tests.support.hostile_cloud.HostileCloud`, which does
what the sandbox cannot: trickle an answer, send tens of megabytes, echo the request URL with the token in it.
Every test counts deliveries at the cloud and acknowledgements at the POS: nothing acknowledged is lost, and
no invoice reaches the cloud more often than the bridge recorded attempts for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, bridge_key, invoice
from tests.support.hostile_cloud import Behaviour, HostileCloud

CLOUD_TOKEN = "cloud-secret-9d3f7a2b"
MiB = 1024 * 1024


@pytest.fixture
def cloud():
    with HostileCloud() as hostile:
        yield hostile


def start_bridge(tmp_path: Path, cloud: HostileCloud, **cloud_settings: object) -> DaemonProcess:
    daemon = DaemonProcess(tmp_path, cloud.url, CLOUD_TOKEN, "demo",
                           overrides={"cloud": cloud_settings, "delivery": {"concurrency": 2}})
    return daemon.start()


def queue(daemon: DaemonProcess) -> dict[str, dict]:
    """``posbridge queue list --json``, by invoice key."""
    result = daemon.cli("queue", "list", "--json", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {row["key"]: row for row in rows}


def post_all(daemon: DaemonProcess, numbers: range, *, answers: tuple[int, ...] = (200, 202)) -> list[str]:
    """POST each invoice as a POS would; each must get one of ``answers`` (an acknowledgement, or the cloud's own
    refusal relayed within the inline deadline). Returns their keys, as the bridge delivers them."""
    keys = []
    for number in numbers:
        response = daemon.post_invoice(invoice(number))
        assert response.status_code in answers, response.text
        keys.append(bridge_key(number))
    return keys


def assert_each_delivered_within_its_attempts(daemon: DaemonProcess, cloud: HostileCloud, keys: list[str],
                                              *, once: bool = True) -> None:
    """Every acknowledged invoice ends ``sent``; the cloud saw each exactly as often as the bridge recorded
    attempts for it, and (``once``) counted it once. ``once=False`` where a short test deadline could cut a
    good answer on a slow machine: the bridge then sends it again with its key, as it must."""
    daemon.wait_for(lambda: all(row["state"] == "sent" for row in queue(daemon).values())
                    and len(queue(daemon)) == len(keys), timeout=60, what="every invoice sent")
    rows = queue(daemon)
    for key in keys:
        assert cloud.accepted[key] == 1 if once else cloud.accepted[key] >= 1, (key, cloud.accepted)
        assert cloud.deliveries[key] == rows[key]["attempts"], (key, cloud.deliveries[key], rows[key])


def test_trickled_cloud_answers_end_at_the_deadline_and_delivery_resumes(tmp_path: Path, cloud: HostileCloud):
    """~15 s: every delivery slot must be seen caught by a trickle and freed by a 3 s deadline, then the
    backoff must run out before delivery resumes; a shorter deadline would cut good answers on a slow machine."""
    cloud.set("invoices", Behaviour("trickle", size=100_000, interval=0.5))  # ~14 h per answer
    daemon = start_bridge(tmp_path, cloud, deadline=3)
    try:
        keys = post_all(daemon, range(1, 7))
        # every delivery slot (and the inline attempts) has been caught by a trickling answer at least once
        daemon.wait_for(lambda: cloud.count("invoices", "trickle") >= 4, timeout=30, what="4 trickled attempts")
        rows = daemon.wait_for(lambda: [r for r in queue(daemon).values() if r["last_error"]], timeout=30,
                               what="an attempt that ended at the deadline")
        assert "[cloud] deadline" in rows[0]["last_error"]
        cloud.set("invoices", Behaviour("ok"))
        assert_each_delivered_within_its_attempts(daemon, cloud, keys, once=False)
    finally:
        daemon.stop()


def test_oversized_invoice_answers_are_failed_attempts_and_nothing_is_stored(tmp_path: Path, cloud: HostileCloud):
    size = 64 * MiB
    cloud.set("invoices", Behaviour("huge", size=size, declare_length=False))  # the cap must hit while reading
    daemon = start_bridge(tmp_path, cloud, max_answer_bytes=MiB)
    try:
        keys = post_all(daemon, range(1, 4))
        daemon.wait_for(lambda: all(cloud.deliveries[k] >= 2 for k in keys), timeout=60,
                        what="each invoice tried twice against the oversized answers")
        rows = queue(daemon)
        assert all(row["state"] == "pending" for row in rows.values()), rows
        assert any("max_answer_bytes" in (row["last_error"] or "") for row in rows.values()), rows
        stored = sum(p.stat().st_size for p in daemon.db_path.parent.iterdir() if p.is_file())
        assert stored < 4 * MiB, f"the database grew to {stored} bytes"
        daemon.wait_for(lambda: cloud.bytes_sent, timeout=30, what="the cloud noticing the bridge hung up")
        assert max(cloud.bytes_sent) < size // 2, "the bridge read the oversized answer to its end"
        cloud.set("invoices", Behaviour("ok"))
        assert_each_delivered_within_its_attempts(daemon, cloud, keys)
        assert "over [cloud] max_answer_bytes" in daemon.log_path.read_text()
    finally:
        daemon.stop()


def test_an_oversized_member_answer_is_not_relayed_to_the_pos(tmp_path: Path, cloud: HostileCloud):
    cloud.set("member", Behaviour("huge", size=100 * MiB))
    daemon = start_bridge(tmp_path, cloud)
    try:
        response = daemon.get_member("OW7K2M9Q")
        assert response.status_code == 503, response.text[:300]  # nothing cached, policy "reject"
        assert len(response.content) < 2048
        assert "over [cloud] max_answer_bytes" in daemon.log()
        # the till keeps working: an invoice is acknowledged and delivered once
        keys = post_all(daemon, range(1, 2))
        assert_each_delivered_within_its_attempts(daemon, cloud, keys)
        cloud.set("member", Behaviour("ok"))
        assert daemon.get_member("OW7K2M9Q").json()["name"] == "Ana"
    finally:
        daemon.stop()


def test_a_cloud_error_that_echoes_the_url_is_stored_and_relayed_without_the_token(tmp_path: Path,
                                                                                  cloud: HostileCloud):
    cloud.set("invoices", Behaviour("echo_url", status=422))
    cloud.set("member", Behaviour("echo_url", status=400))
    daemon = start_bridge(tmp_path, cloud)
    try:
        keys = post_all(daemon, range(1, 3), answers=(202, 422))  # 422: the cloud's refusal, relayed redacted
        daemon.wait_for(lambda: all(r["state"] == "rejected" for r in queue(daemon).values())
                        and len(queue(daemon)) == 2, timeout=30, what="both invoices rejected")
        member = daemon.get_member("OW7K2M9Q")
        assert member.status_code == 400
        assert "_token=***" in member.text and CLOUD_TOKEN not in member.text
        exported = daemon.cli("queue", "export")
        assert exported.returncode == 0, exported.stderr
        assert "_token=***" in exported.stdout  # the cloud's answer is kept for a person, redacted
        assert CLOUD_TOKEN not in exported.stdout
        daemon.stop()
        for path in [*daemon.db_path.parent.iterdir(), daemon.log_path]:
            assert CLOUD_TOKEN.encode() not in path.read_bytes(), path
        rows = queue(daemon)
        for key in keys:
            assert cloud.deliveries[key] == rows[key]["attempts"] == 1
    finally:
        daemon.stop()
