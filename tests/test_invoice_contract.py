"""The invoice contract with the POS, over real HTTP against the sandbox cloud: which invoices are the same sale,
what happens to a different sale under a known id, what the POS may send, and what it is told."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from posbridge.db import MIGRATIONS
from posbridge.sandbox.state import invoice_key as sandbox_key
from tests.support.daemon import DaemonProcess, invoice
from tests.support.paths import shared_dir

SHARE_SANDBOX = True  # see conftest.sandbox
FIXTURES = shared_dir() / "fixtures" / "invoices"


def accepted(sandbox) -> dict[str, dict]:
    return {entry["key"]: entry for entry in sandbox.invoices()}


def all_sent(bridge, count: int) -> None:
    bridge.wait_for(lambda: bridge.status()["queue"]["sent"] == count, timeout=30, what=f"{count} sent")


# --- 1. keys that never merge two different sales -----------------------------------------------------------

MERGED_BEFORE = {
    "two workplaces sharing a series": (invoice(5, workplace=1), invoice(5, workplace=2)),
    "spaces around the series": (invoice(5, serie=" X "), invoice(5, serie="X")),
    "a separator inside a value": (invoice(1, serie="A-B"), invoice("B-1", serie="A")),
    "two documents with their own GlobalId": (invoice(5, global_id="1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
                                              invoice(5, global_id="6fa459ea-ee8a-3ca4-894e-db77e160355e")),
}


@pytest.mark.parametrize("case", sorted(MERGED_BEFORE))
def test_two_different_sales_are_both_stored_and_both_delivered(bridge, sandbox, case):
    first, second = MERGED_BEFORE[case]
    answers = [bridge.post_invoice(first), bridge.post_invoice(second)]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert "x-posbridge-duplicate" not in answers[1].headers
    all_sent(bridge, 2)
    seen = accepted(sandbox)
    for document in (first, second):
        assert seen[sandbox_key(document, b"", None)]["accepted"] == 1


def test_a_number_sent_as_text_is_the_same_number_by_rule(bridge, sandbox):
    assert bridge.post_invoice(invoice(5)).status_code == 200
    quoted = bridge.post_invoice(invoice("5"))  # number 5 again, quoted: the same sale id, other bytes
    assert quoted.status_code == 202 and quoted.json()["status"] == "held"
    assert quoted.json()["conflicts_with"] == 1
    other = bridge.post_invoice(invoice("05"))  # the text 05 is not the number 5
    assert other.status_code == 200


def test_the_same_sale_reformatted_is_a_plain_duplicate(bridge, sandbox):
    document = invoice(6, workplace=3)
    first = bridge.post_invoice(json.dumps(document).encode())
    reordered = json.dumps(dict(reversed(list(document.items()))), indent=2).encode()
    again = bridge.post_invoice(reordered)
    assert again.status_code == first.status_code == 200
    assert again.content == first.content and again.headers["x-posbridge-duplicate"] == "true"
    assert accepted(sandbox)["3:T1-6"]["deliveries"] == 1


def test_global_id_identifies_the_sale_whatever_its_series_and_number(bridge, sandbox):
    first = bridge.post_invoice(invoice(7, global_id="g-7"))
    renumbered = bridge.post_invoice(invoice(8, global_id="g-7"))  # same document id, other content
    assert first.status_code == 200
    assert renumbered.status_code == 202 and renumbered.json()["status"] == "held"


def test_an_invoice_stored_before_the_upgrade_is_still_recognised_and_keeps_its_key(sandbox, tmp_path):
    """A database of posbridge 0.1 (schema 3, key "Serie-Number") with a pending sale; after the upgrade the
    POS re-posts it: a duplicate, nothing new stored, and it is delivered under its old key."""
    body = (FIXTURES / "simple-sale.json").read_bytes()
    database = tmp_path / "state" / "posbridge.db"
    database.parent.mkdir()
    _database_of_version_0_1(database, key="T1-1042", body=body)
    sandbox.faults(outage=True)
    bridge = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account)
    bridge.start()
    try:
        again = bridge.post_invoice(body)
        assert again.status_code == 202 and again.headers["x-posbridge-duplicate"] == "true"
        assert again.json() == {"status": "queued", "id": 1}
        assert sum(bridge.status()["queue"].values()) == 1
        sandbox.faults(outage=False)
        all_sent(bridge, 1)
        record = accepted(sandbox)[sandbox_key(json.loads(body), body, None)]
        assert record["accepted"] == 1 and record["idempotency_keys"] == ["T1-1042"]
    finally:
        bridge.stop()


def _database_of_version_0_1(path: Path, *, key: str, body: bytes) -> None:
    import sqlite_utils

    conn = sqlite3.connect(path, isolation_level=None)
    db = sqlite_utils.Database(conn)
    for number, migration in enumerate(MIGRATIONS[:3]):
        migration(db)
        conn.execute(f"PRAGMA user_version = {number + 1}")
    conn.execute(
        "INSERT INTO invoices (key, body, content_type, body_sha256, member_id, amount, state, received_at,"
        " attempts, next_attempt_at) VALUES (?, ?, 'application/json', '', 'OW7K2M9Q', 5.7, 'pending', 1, 0, 1)",
        (key, body))
    conn.close()


# --- same identity, different content: held for a person ------------------------------------------------------


def test_a_different_sale_under_a_known_id_is_held_and_said_so(bridge, sandbox):
    first = bridge.post_invoice(invoice(9, total=10))
    second = bridge.post_invoice(invoice(9, total=99))  # a till whose counter was reset
    assert first.status_code == 200
    assert second.status_code == 202, second.text
    held = second.json()
    assert held["status"] == "held" and held["conflicts_with"] == 1 and held["id"] == 2
    assert second.headers["x-posbridge-conflict"] == "1"
    assert second.content != first.content
    status = bridge.status()
    assert status["queue"]["held"] == 1 and status["needs_person"] == 1
    listed = bridge.cli("queue", "list", "--state", "held")
    assert "held" in listed.stdout and "same sale id as invoice 1" in listed.stdout
    metrics = bridge.client.get("/metrics").text
    assert 'posbridge_invoices_received_total{result="conflict"} 1.0' in metrics
    assert 'posbridge_queue_depth{state="held"} 1.0' in metrics
    assert any("WARNING" in line and "held for a person as invoice 2" in line for line in bridge.log().splitlines())
    assert accepted(sandbox)["T1-9"]["points"] == 10  # the held one reached nobody


def test_the_held_sale_posted_again_is_a_duplicate_of_the_held_one(bridge, sandbox):
    bridge.post_invoice(invoice(10, total=10))
    held = bridge.post_invoice(invoice(10, total=99))
    again = bridge.post_invoice(invoice(10, total=99))
    assert again.status_code == 202 and again.json() == held.json()
    assert again.headers["x-posbridge-duplicate"] == "true"
    assert bridge.status()["queue"]["held"] == 1


def test_release_delivers_a_held_sale_as_a_sale_of_its_own(bridge, sandbox):
    bridge.post_invoice(invoice(11, total=10))
    held_id = bridge.post_invoice(invoice(11, total=99)).json()["id"]
    refused = bridge.cli("queue", "retry", str(held_id))
    assert refused.returncode == 1 and "queue release" in refused.stderr
    released = bridge.cli("queue", "release", str(held_id))
    assert released.returncode == 0, released.stderr
    all_sent(bridge, 2)
    seen = accepted(sandbox)
    assert seen["T1-11"]["points"] == 10
    conflict = seen["T1-11~2"]
    assert (conflict["accepted"], conflict["points"], conflict["conflict_of"]) == (1, 99, "T1-11")
    assert conflict["idempotency_keys"][0].startswith("doc:Serie=T1;Number=11~")


def test_drop_resolves_a_held_sale_without_delivering_it(bridge, sandbox):
    bridge.post_invoice(invoice(12, total=10))
    held_id = bridge.post_invoice(invoice(12, total=99)).json()["id"]
    dropped = bridge.cli("queue", "drop", str(held_id), "--yes")
    assert dropped.returncode == 0, dropped.stderr
    assert bridge.status()["queue"]["held"] == 0 and bridge.status()["needs_person"] == 0
    assert "T1-12~2" not in accepted(sandbox)


# --- 2. what the POS sends, as it really sends it --------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain; charset=utf-8", "text/json", None,
                                          "application/vnd.agora+json"])
def test_json_sent_with_what_pos_clients_really_send_is_accepted_and_forwarded_as_is(
        bridge, sandbox, content_type):
    body = json.dumps(invoice(20)).encode()
    response = bridge.post_invoice(body, content_type=content_type)
    assert response.status_code == 200, response.text
    stored = sandbox.admin.get("/sandbox/invoices/T1-20")
    assert stored.content == body
    assert stored.headers.get("content-type") == content_type


def test_a_body_with_a_utf8_bom_is_accepted_and_forwarded_with_its_bom(bridge, sandbox):
    body = b"\xef\xbb\xbf" + (FIXTURES / "unicode-names.json").read_bytes()
    response = bridge.post_invoice(body, content_type="text/plain; charset=utf-8")
    assert response.status_code == 200, response.text
    key = sandbox_key(json.loads(body[3:]), body, None)
    assert sandbox.invoice_bytes(key) == body


NOT_JSON_BY_THE_STANDARD = {
    "NaN": (b'{"Serie": "T1", "Number": 1, "Totals": {"GrossAmount": NaN}}', "NaN"),
    "Infinity": (b'{"Serie": "T1", "Number": 1, "Totals": {"GrossAmount": Infinity}}', "Infinity"),
    "-Infinity": (b'{"Serie": "T1", "Number": 1, "Totals": {"GrossAmount": -Infinity}}', "-Infinity"),
    "lone surrogate": (b'{"Serie": "T1", "Number": 1, "Loyalty": {"MemberId": "\\ud800"}}', "Loyalty.MemberId"),
    "lone surrogate in a name": (b'{"Serie": "T1", "Number": 1, "\\udc00": 1}', "surrogate"),
    "duplicate names": (b'{"Serie": "T1", "Number": 1, "Number": 2}', "'Number' appears twice"),
    "duplicate names deep": (b'{"Serie": "T1", "Number": 1, "Totals": {"GrossAmount": 1, "GrossAmount": 9}}',
                             "'GrossAmount' appears twice"),
}


@pytest.mark.parametrize("case", sorted(NOT_JSON_BY_THE_STANDARD))
def test_what_is_not_standard_json_is_refused_with_the_reason_and_not_stored(bridge, case):
    body, named = NOT_JSON_BY_THE_STANDARD[case]
    response = bridge.post_invoice(body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_json" and named in response.json()["detail"]
    assert sum(bridge.status()["queue"].values()) == 0
    assert bridge.client.get("/healthz").status_code == 200


# --- 3. answers that are true --------------------------------------------------------------------------------


def test_a_refusal_by_the_cloud_within_the_deadline_is_what_the_pos_gets(bridge, sandbox):
    unreadable = invoice(30)
    unreadable["Totals"]["GrossAmount"] = "twelve"
    response = bridge.post_invoice(unreadable)
    assert response.status_code == 422
    assert response.json()["error"] == "unreadable_invoice"  # the cloud's own body
    bridge.wait_for(lambda: bridge.status()["queue"]["rejected"] == 1, what="kept as rejected")
    again = bridge.post_invoice(unreadable)
    assert again.status_code == 422 and again.content == response.content
    assert again.headers["x-posbridge-duplicate"] == "true"
    assert accepted(sandbox)["T1-30"]["deliveries"] == 1


def test_member_lookup_with_a_refused_token_serves_the_cache_and_names_the_cause(bridge, sandbox):
    assert bridge.get_member("OW7K2M9Q").status_code == 200
    bridge.wait_for(lambda: bridge.cli("members", "cache", "--json").stdout.count('"entries": 1'), what="cached")
    sandbox.faults(auth_fail=True)
    cached = bridge.get_member("OW7K2M9Q")
    assert cached.status_code == 200 and cached.headers["x-posbridge-cache"] == "stale"
    unknown = bridge.get_member("OW3HX8RT")
    assert unknown.status_code == 503
    assert unknown.json()["error"] == "cloud_auth_refused"
    assert "token" in unknown.json()["detail"]


def test_a_remembered_404_served_while_the_cloud_is_down_is_not_called_fresh(bridge, sandbox):
    assert bridge.get_member("NOSUCH99").status_code == 404
    sandbox.faults(outage=True)
    assert bridge.get_member("OW7K2M9Q").status_code == 503  # the bridge learns the cloud is down
    remembered = bridge.get_member("NOSUCH99")
    assert remembered.status_code == 404
    assert remembered.headers["x-posbridge-cache"] != "fresh"
