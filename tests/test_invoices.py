"""The invoice path, end to end: a POS posting to the daemon process, the sandbox cloud over real HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import resource
import threading
import time

import httpx
import pytest

from posbridge.sandbox.state import invoice_key as sandbox_key
from tests.support.daemon import DaemonProcess, invoice
from tests.support.paths import shared_dir

FIXTURES = shared_dir() / "fixtures" / "invoices"


SHARE_SANDBOX = True  # see conftest.sandbox


@pytest.fixture(scope="module")
def steady_bridge(shared_sandbox, tmp_path_factory):
    """One daemon for the bad-input battery: each bad request must leave it serving the next one."""
    daemon = DaemonProcess(tmp_path_factory.mktemp("steady"), shared_sandbox.url, shared_sandbox.token,
                           shared_sandbox.account)
    daemon.start()
    yield daemon
    daemon.stop()


def accepted_by_key(sandbox) -> dict[str, dict]:
    return {entry["key"]: entry for entry in sandbox.invoices()}


def test_online_invoice_gets_the_clouds_answer_and_is_sent(bridge, sandbox):
    response = bridge.post_invoice(invoice(1))
    assert response.status_code == 200
    assert response.json()["invoice"] == "T1-1"
    assert response.json()["points_awarded"] == 12
    assert accepted_by_key(sandbox)["T1-1"]["accepted"] == 1
    assert bridge.status()["queue"]["sent"] == 1


def test_outage_invoices_are_queued_then_delivered_once_when_it_ends(bridge, sandbox):
    sandbox.faults(outage=True)
    started = time.monotonic()
    answers = [bridge.post_invoice(invoice(n)) for n in range(1, 21)]
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    assert all(a.json()["status"] == "queued" for a in answers)
    assert time.monotonic() - started < 20 * 1.5  # the outage never costs a POS the whole deadline each time
    assert bridge.status()["queue"]["pending"] == 20
    sandbox.faults(outage=False)
    bridge.wait_for(lambda: bridge.status()["queue"]["sent"] == 20, timeout=30, what="all 20 sent")
    seen = accepted_by_key(sandbox)
    assert all(seen[f"T1-{n}"]["accepted"] == 1 for n in range(1, 21))


def test_a_dead_link_costs_the_pos_one_deadline_then_nothing(bridge, sandbox):
    deadline = 1.5  # [server] inline_deadline
    sandbox.faults(latency_ms=8000)  # longer than the delivery timeout (5 s): a link that swallows packets
    started = time.monotonic()
    assert bridge.post_invoice(invoice(1)).status_code == 202
    first = time.monotonic() - started
    assert deadline <= first < 5  # it waited for the deadline, not for the cloud's 5 s timeout
    bridge.wait_for(lambda: bridge.status()["cloud"]["reachable"] is False, timeout=15, what="cloud marked down")
    started = time.monotonic()
    assert bridge.post_invoice(invoice(2)).status_code == 202
    assert time.monotonic() - started < deadline  # answered without trying the cloud at all


def test_duplicate_post_of_the_same_body_returns_the_first_acknowledgement(bridge, sandbox):
    first = bridge.post_invoice(invoice(7))
    second = bridge.post_invoice(invoice(7))
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert second.headers["x-posbridge-duplicate"] == "true"
    assert accepted_by_key(sandbox)["T1-7"]["deliveries"] == 1
    assert bridge.status()["queue"]["sent"] == 1


def test_retry_after_429_is_respected_before_the_next_attempt(bridge, sandbox):
    sandbox.faults(error_rate=1.0, error_status=429, retry_after=3)
    posted_at = time.monotonic()
    assert bridge.post_invoice(invoice(30)).status_code == 202
    time.sleep(1.0)
    sandbox.faults(error_rate=0.0)
    time.sleep(1.5)
    # 2.5 s after the first attempt: still nothing accepted, the cloud asked for 3 s
    assert accepted_by_key(sandbox).get("T1-30", {}).get("accepted", 0) == 0
    bridge.wait_for(lambda: accepted_by_key(sandbox).get("T1-30", {}).get("accepted") == 1, timeout=15,
                    what="delivery after Retry-After")
    assert time.monotonic() - posted_at >= 3.0


def test_cloud_401_pauses_delivery_without_rejecting_and_resumes(bridge, sandbox):
    sandbox.faults(auth_fail=True)
    for n in range(1, 6):
        assert bridge.post_invoice(invoice(n)).status_code == 202
    status = bridge.wait_for(lambda: (s := bridge.status())["delivery"]["paused"] and s, what="paused")
    assert "token" in status["delivery"]["paused_reason"]
    assert status["queue"]["rejected"] == 0
    time.sleep(2.5)  # several probe intervals: still paused, still nothing rejected
    assert bridge.status()["queue"] == {"pending": 5, "sent": 0, "rejected": 0, "held": 0}
    sandbox.faults(auth_fail=False)
    bridge.wait_for(lambda: bridge.status()["queue"]["sent"] == 5, timeout=20, what="resumed")
    assert bridge.status()["delivery"]["paused"] is False


def test_cloud_422_rejects_the_invoice_visibly_and_queue_retry_sends_it_again(bridge, sandbox):
    unreadable = invoice(40)
    unreadable["Totals"]["GrossAmount"] = "twelve"
    sandbox.faults(outage=True)  # rejected later by the replayer, not inline (see test_invoice_contract.py)
    response = bridge.post_invoice(unreadable)
    assert response.status_code == 202
    number = str(response.json()["id"])
    sandbox.faults(outage=False)
    bridge.wait_for(lambda: bridge.status()["queue"]["rejected"] == 1, what="rejected")
    shown = bridge.cli("queue", "show", number)
    assert shown.returncode == 0, shown.stderr
    details = json.loads(shown.stdout)
    assert details["state"] == "rejected"
    assert details["cloud_answer"]["status"] == 422
    assert "unreadable" in details["cloud_answer"]["body"]
    listed = bridge.cli("queue", "list", "--state", "rejected")
    assert details["key"] in listed.stdout
    deliveries_before = accepted_by_key(sandbox)["T1-40"]["deliveries"]
    retried = bridge.cli("queue", "retry", details["key"])
    assert retried.returncode == 0, retried.stderr
    bridge.wait_for(lambda: accepted_by_key(sandbox)["T1-40"]["deliveries"] > deliveries_before,
                    what="second delivery")


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_fixture_reaches_the_cloud_byte_for_byte(bridge, sandbox, fixture):
    body = (FIXTURES / fixture).read_bytes()
    response = bridge.post_invoice(body, content_type="application/json; charset=utf-8")
    assert response.status_code in (200, 202), response.text
    key = sandbox_key(json.loads(body), body, None)
    bridge.wait_for(lambda: key in accepted_by_key(sandbox), what="delivery")
    assert sandbox.invoice_bytes(key) == body


BAD_INPUTS = {
    "not json": (b"hello till", "application/json", 400, "invalid_json"),
    "truncated json": (b'{"Serie": "T1", "Number": 1', "application/json", 400, "invalid_json"),
    "invalid utf-8": (b'{"Serie": "T\xff\xfe1", "Number": 1}', "application/json", 400, "invalid_json"),
    "empty body": (b"", "application/json", 400, "invalid_json"),
    "json array": (b"[1, 2, 3]", "application/json", 400, "invalid_json"),
    "deep nesting": (b"[" * 10000 + b"]" * 10000, "application/json", 400, "invalid_json"),
    "deep object nesting": (b'{"a":' * 10000 + b"1" + b"}" * 10000, "application/json", 400, "invalid_json"),
    "10 MB body": (b'{"x": "' + b"a" * (10 * 1024 * 1024) + b'"}', "application/json", 413, "payload_too_large"),
    "html content type": (b'{"Serie": "T1", "Number": 1}', "text/html", 415, "unsupported_media_type"),
    "utf-16 charset": (b'{"Serie": "T1", "Number": 1}', "application/json; charset=utf-16", 415,
                       "unsupported_media_type"),
    "form content type": (b"a=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_invoice_input_gets_its_json_error_and_the_daemon_keeps_serving(steady_bridge, sandbox, case):
    bridge = steady_bridge
    stored_before = sum(bridge.status()["queue"].values())
    body, content_type, status, code = BAD_INPUTS[case]
    response = bridge.post_invoice(body, content_type=content_type)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert response.json()["detail"]
    assert sum(bridge.status()["queue"].values()) == stored_before
    good = invoice(1, serie="BAD-" + case.replace(" ", "-"))
    assert bridge.post_invoice(good).status_code == 200


@pytest.mark.parametrize("how", ["no token", "wrong token", "wrong bearer", "both disagreeing", "bad scheme"])
def test_invoice_without_the_right_local_token_gets_401(steady_bridge, how):
    bridge = steady_bridge
    pending_before = bridge.status()["queue"]["pending"]
    url = "/agora/invoices"
    headers = {"Content-Type": "application/json"}
    params: dict[str, str] = {}
    if how == "wrong token":
        params["_token"] = "nope"
    elif how == "wrong bearer":
        headers["Authorization"] = "Bearer nope"
    elif how == "both disagreeing":
        params["_token"] = bridge.local_token
        headers["Authorization"] = "Bearer something-else"
    elif how == "bad scheme":
        headers["Authorization"] = f"Basic {bridge.local_token}"
    response = bridge.client.post(url, content=json.dumps(invoice(1)), headers=headers, params=params)
    assert response.status_code == 401
    assert response.json()["error"] in ("missing_token", "invalid_token", "token_mismatch")
    assert bridge.local_token not in response.text
    assert bridge.status()["queue"]["pending"] == pending_before


def test_bearer_token_is_accepted_like_the_query_token(steady_bridge, sandbox):
    bridge = steady_bridge
    response = bridge.client.post("/agora/invoices", content=json.dumps(invoice(3)),
                                  headers={"Content-Type": "application/json",
                                           "Authorization": f"Bearer {bridge.local_token}"})
    assert response.status_code == 200


def test_disk_write_failure_answers_503_never_2xx_and_recovers(bridge, sandbox):
    assert bridge.post_invoice(invoice(1)).status_code == 200
    pid = bridge.proc.pid
    # every write the daemon makes to a file now fails (EFBIG), as on a full disk
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
    try:
        for number in range(2, 6):
            response = bridge.post_invoice(invoice(number))
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "storage_unavailable"
        assert bridge.client.get("/healthz").status_code == 200
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    response = bridge.post_invoice(invoice(6))
    assert response.status_code == 200, response.text
    keys = accepted_by_key(sandbox)
    assert "T1-6" in keys and not any(f"T1-{n}" in keys for n in range(2, 6))


@pytest.mark.slow
def test_sigkill_under_load_loses_no_acknowledged_invoice_and_counts_each_once(sandbox, tmp_path):
    sandbox.faults(latency_ms=5)
    daemon = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account,
                           overrides={"delivery": {"concurrency": 8}})
    daemon.start()
    acknowledged: set[str] = set()
    lock = threading.Lock()
    numbers = iter(range(1, 1001))
    numbers_lock = threading.Lock()
    kill_at = 250  # acknowledgements before the kill: mid-burst on any machine, however fast or slow
    killed = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=10) as http:
            while True:
                with numbers_lock:
                    number = next(numbers, None)
                if number is None:
                    return
                if number > kill_at + 50:
                    killed.wait()  # the rest of the burst comes after the kill, whatever the machine's speed
                body = json.dumps(invoice(number, serie="K")).encode()
                while True:  # a POS retries until it gets an answer
                    try:
                        response = http.post(f"{daemon.url}/agora/invoices", content=body,
                                             params={"_token": daemon.local_token},
                                             headers={"Content-Type": "application/json"})
                    except httpx.HTTPError:
                        time.sleep(0.1)
                        continue
                    if 200 <= response.status_code < 300:
                        with lock:
                            acknowledged.add(f"K-{number}")
                        break
                    time.sleep(0.1)

    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(client) for _ in range(16)]
            daemon.wait_for(lambda: len(acknowledged) >= kill_at, timeout=120, interval=0.005,
                            what=f"{kill_at} acknowledgements")
            daemon.kill()
            with lock:
                before_kill = len(acknowledged)
            killed.set()
            daemon.start()
            for future in futures:
                future.result(timeout=240)
        assert kill_at <= before_kill <= kill_at + 50
        assert len(acknowledged) == 1000
        daemon.wait_for(lambda: daemon.status()["queue"]["sent"] == 1000, timeout=120, interval=0.5,
                        what="all 1000 delivered")
        seen = accepted_by_key(sandbox)
        assert all(seen[key]["accepted"] == 1 for key in acknowledged), "an acknowledged invoice was lost"
        assert max(entry["accepted"] for entry in seen.values()) == 1
    finally:
        daemon.stop()
