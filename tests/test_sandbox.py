"""The sandbox cloud, over real HTTP against a `posbridge sandbox` subprocess.

Each test reads as a rule of the cloud contract (`/work/shared/reference/cloud-contract.md`) or of the
admin API that the rest of the suite relies on to prove "nothing lost, nothing counted twice".
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from posbridge.sandbox import EmbeddedSandbox
from tests.support.paths import shared_dir
from tests.support.sandbox import SandboxProcess, running_sandbox

SHARED = shared_dir()
FIXTURES = sorted((SHARED / "fixtures" / "invoices").glob("*.json"))
MEMBER = "OW7K2M9Q"
CARD = "4000123456789"
START_POINTS = 120


SHARE_SANDBOX = True  # see conftest.sandbox; `running_sandbox()` below checks a fresh process


def get_member(sandbox: SandboxProcess, member_id: str, **params: str) -> httpx.Response:
    return httpx.get(sandbox.member_url(member_id), params={**sandbox.params, **params}, timeout=10)


def post_invoice(sandbox: SandboxProcess, body: bytes | dict[str, Any], *, key: str | None = None,
                 content_type: str = "application/json", timeout: float = 10) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(sandbox.invoices_url, params=sandbox.params, content=data, headers=headers, timeout=timeout)


def sale(number: int = 1, total: Any = 12.5, member: str | None = MEMBER) -> dict[str, Any]:
    return {"Serie": "TS", "Number": number, "Loyalty": {"MemberId": member} if member else None,
            "Totals": {"GrossAmount": total}}


def points_of(sandbox: SandboxProcess, member_id: str = MEMBER) -> int:
    points: int = get_member(sandbox, member_id).json()["points"]
    return points


# -- members ------------------------------------------------------------------------------------------------
def test_known_member_is_found_by_id_and_by_card_number(sandbox: SandboxProcess) -> None:
    by_id, by_card = get_member(sandbox, MEMBER), get_member(sandbox, CARD)
    assert by_id.status_code == by_card.status_code == 200
    assert by_id.json() == by_card.json()
    assert set(by_id.json()) == {"id", "card_number", "name", "email", "points", "level"}
    assert by_id.json()["card_number"] == CARD
    assert any(ch in by_id.json()["name"] for ch in "áéíóúñÁÉÍÓÚÑ")


def test_unknown_member_is_404_member_not_found(sandbox: SandboxProcess) -> None:
    response = get_member(sandbox, "NOPE0000")
    assert (response.status_code, response.json()) == (404, {"error": "member_not_found"})


def test_bad_token_is_401_and_bearer_header_is_accepted(sandbox: SandboxProcess) -> None:
    response = httpx.get(sandbox.member_url(MEMBER), params={"_token": "wrong", "ow_account": "demo"})
    assert (response.status_code, response.json()) == (401, {"error": "invalid_token"})
    assert httpx.get(sandbox.member_url(MEMBER), params={"ow_account": "demo"}).status_code == 401
    bearer = httpx.get(sandbox.member_url(MEMBER), params={"ow_account": "demo"},
                       headers={"Authorization": f"Bearer {sandbox.token}"})
    assert bearer.status_code == 200


def test_missing_account_is_400_and_unknown_account_is_404(sandbox: SandboxProcess) -> None:
    missing = httpx.get(sandbox.member_url(MEMBER), params={"_token": sandbox.token})
    assert (missing.status_code, missing.json()["error"]) == (400, "missing_account")
    other = get_member(sandbox, MEMBER, ow_account="someone-else")
    assert (other.status_code, other.json()) == (404, {"error": "account_not_found"})


def test_seeded_member_is_served_and_upserted_by_id(sandbox: SandboxProcess) -> None:
    sandbox.seed_member({"id": "OWNEW001", "card_number": "999", "name": "Nuevo", "points": 3})
    sandbox.seed_member({"id": "OWNEW001", "card_number": "999", "name": "Nuevo Ñ", "points": 4})
    assert get_member(sandbox, "999").json()["name"] == "Nuevo Ñ"
    assert [m["id"] for m in sandbox.members()].count("OWNEW001") == 1
    assert sandbox.admin.post("/sandbox/members", json={"id": ""}).status_code == 400


def test_request_counters_count_member_lookups_per_id_and_invoice_calls(sandbox: SandboxProcess) -> None:
    for _ in range(3):
        get_member(sandbox, MEMBER)
    get_member(sandbox, "OTHER")
    post_invoice(sandbox, sale())
    counts = sandbox.requests()
    assert (counts["member"], counts["invoices"]) == (4, 1)
    assert counts["by_member"] == {MEMBER: 3, "OTHER": 1}


# -- invoices -----------------------------------------------------------------------------------------------
def test_invoice_awards_one_point_per_whole_unit_of_the_total_and_answers_the_balance(
        sandbox: SandboxProcess) -> None:
    response = post_invoice(sandbox, sale(total=12.99))
    assert response.status_code == 200
    assert response.json() == {"invoice": "TS-1", "member": MEMBER, "points_awarded": 12,
                               "balance": START_POINTS + 12}
    assert points_of(sandbox) == START_POINTS + 12


def test_invoice_total_falls_back_to_total_fields_and_a_refund_takes_points_away(sandbox: SandboxProcess) -> None:
    assert post_invoice(sandbox, {"Serie": "A", "Number": 1, "Loyalty": {"MemberId": MEMBER}, "Total": 30}
                        ).json()["points_awarded"] == 30
    assert post_invoice(sandbox, {"Serie": "A", "Number": 2, "Loyalty": {"MemberId": MEMBER}, "total": "7.9"}
                        ).json()["points_awarded"] == 7
    refund = post_invoice(sandbox, sale(number=3, total=-19.95)).json()
    assert refund["points_awarded"] == -19
    assert refund["balance"] == START_POINTS + 30 + 7 - 19


def test_invoice_without_member_or_with_unknown_member_is_accepted_without_points(sandbox: SandboxProcess) -> None:
    assert post_invoice(sandbox, sale(number=1, member=None)).json() == {
        "invoice": "TS-1", "member": None, "points_awarded": 0, "balance": None}
    assert post_invoice(sandbox, sale(number=2, member="UNKNOWN9")).json() == {
        "invoice": "TS-2", "member": "UNKNOWN9", "points_awarded": 0, "balance": None}
    assert [i["accepted"] for i in sandbox.invoices()] == [1, 1]


def test_invoice_key_is_idempotency_key_or_body_hash_when_the_invoice_has_no_serie_and_number(
        sandbox: SandboxProcess) -> None:
    body = json.dumps({"Total": 1}).encode()
    assert post_invoice(sandbox, body, key="pos-42").json()["invoice"] == "pos-42"
    hashed = post_invoice(sandbox, json.dumps({"Total": 2}).encode()).json()["invoice"]
    assert hashed.startswith("sha256:") and len(hashed) == len("sha256:") + 64


def test_duplicate_by_idempotency_key_returns_the_first_answer_and_awards_nothing(sandbox: SandboxProcess) -> None:
    first = post_invoice(sandbox, sale(number=1, total=10), key="K-1")
    again = post_invoice(sandbox, sale(number=2, total=99), key="K-1")
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert points_of(sandbox) == START_POINTS + 10
    [record] = sandbox.invoices()
    assert (record["key"], record["deliveries"], record["accepted"]) == ("TS-1", 2, 1)
    assert record["idempotency_keys"] == ["K-1"]


def test_duplicate_by_serie_and_number_returns_the_first_answer_and_awards_nothing(sandbox: SandboxProcess) -> None:
    first = post_invoice(sandbox, sale(number=7, total=10), key="attempt-1")
    again = post_invoice(sandbox, sale(number=7, total=10), key="attempt-2")
    plain = post_invoice(sandbox, sale(number=7, total=10))
    assert first.json() == again.json() == plain.json()
    assert points_of(sandbox) == START_POINTS + 10
    [record] = sandbox.invoices()
    assert (record["deliveries"], record["accepted"]) == (3, 1)
    assert record["idempotency_keys"] == ["attempt-1", "attempt-2"]


@pytest.mark.parametrize("body", [
    json.dumps({"Serie": "X", "Number": 1, "Lines": []}).encode(),
    json.dumps(sale(total="twelve")).encode(),
    json.dumps(sale(total={"amount": 3})).encode(),
    json.dumps([sale()]).encode(),
    b"Serie=X&Number=1",
], ids=["no-total", "total-not-a-number", "total-an-object", "json-array", "not-json"])
def test_unreadable_invoice_is_422_and_never_accepted(sandbox: SandboxProcess, body: bytes) -> None:
    response = post_invoice(sandbox, body)
    assert response.status_code == 422
    assert response.json()["error"] == "unreadable_invoice" and response.json()["detail"]
    assert all(record["accepted"] == 0 for record in sandbox.invoices())
    assert points_of(sandbox) == START_POINTS


def test_invoice_with_bad_token_is_401_and_records_nothing(sandbox: SandboxProcess) -> None:
    response = httpx.post(sandbox.invoices_url, params={"_token": "nope", "ow_account": "demo"}, json=sale())
    assert (response.status_code, response.json()) == (401, {"error": "invalid_token"})
    assert sandbox.invoices() == []


def test_fifty_concurrent_posts_of_the_same_invoice_are_accepted_once(sandbox: SandboxProcess) -> None:
    body = json.dumps(sale(number=50, total=20)).encode()

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(limits=limits, timeout=20) as client:
            return await asyncio.gather(*(
                client.post(sandbox.invoices_url, params=sandbox.params, content=body,
                            headers={"Content-Type": "application/json", "Idempotency-Key": f"try-{i}"})
                for i in range(50)))

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1
    [record] = sandbox.invoices()
    assert (record["deliveries"], record["accepted"]) == (50, 1)
    assert points_of(sandbox) == START_POINTS + 20


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_invoices_round_trip_byte_for_byte_with_their_content_type(
        sandbox: SandboxProcess, fixture: Path) -> None:
    raw = fixture.read_bytes()
    content_type = "application/json; charset=utf-8"
    response = post_invoice(sandbox, raw, content_type=content_type)
    assert response.status_code == 200, response.text
    key = response.json()["invoice"]
    stored = sandbox.admin.get(f"/sandbox/invoices/{key}")
    assert stored.content == raw
    assert stored.headers["content-type"] == content_type
    assert sandbox.invoice(key)["content_type"] == content_type  # type: ignore[index]


def test_unknown_invoice_key_is_404_in_the_admin_api(sandbox: SandboxProcess) -> None:
    response = sandbox.admin.get("/sandbox/invoices/NOPE-1")
    assert (response.status_code, response.json()["error"]) == (404, "invoice_not_found")


def test_deleting_the_invoice_log_forgets_every_invoice(sandbox: SandboxProcess) -> None:
    post_invoice(sandbox, sale())
    sandbox.admin.delete("/sandbox/invoices").raise_for_status()
    assert sandbox.invoices() == []


# -- fault injection ----------------------------------------------------------------------------------------
def test_latency_fault_delays_cloud_calls_but_never_the_admin_api(sandbox: SandboxProcess) -> None:
    sandbox.faults(latency_ms=2000)
    started = time.monotonic()
    assert get_member(sandbox, MEMBER).status_code == 200
    assert time.monotonic() - started >= 2.0
    started = time.monotonic()
    sandbox.invoices()
    assert time.monotonic() - started < 1.5  # had the latency applied, it would take 2 s at least


def test_error_rate_one_answers_every_cloud_call_with_the_status_and_retry_after(sandbox: SandboxProcess) -> None:
    sandbox.faults(error_rate=1, error_status=429, retry_after=3)
    for response in (get_member(sandbox, MEMBER), post_invoice(sandbox, sale())):
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
    assert sandbox.invoices() == []
    sandbox.faults(error_status=None, retry_after=None)
    response = get_member(sandbox, MEMBER)
    assert response.status_code == 503 and "retry-after" not in response.headers


def test_reset_rate_one_drops_the_connection_after_counting_the_invoice_once(sandbox: SandboxProcess) -> None:
    sandbox.faults(reset_rate=1)
    with pytest.raises(httpx.TransportError):
        post_invoice(sandbox, sale(number=9, total=10), key="K-9")
    assert get_member(sandbox, MEMBER).status_code == 200  # reset applies to invoice calls only
    [record] = sandbox.invoices()
    assert (record["key"], record["deliveries"], record["accepted"]) == ("TS-9", 1, 1)
    sandbox.clear_faults()
    resend = post_invoice(sandbox, sale(number=9, total=10), key="K-9")
    assert resend.json()["points_awarded"] == 10
    assert sandbox.invoice("TS-9")["accepted"] == 1  # type: ignore[index]
    assert points_of(sandbox) == START_POINTS + 10


def test_outage_drops_every_cloud_call_without_an_answer_while_the_admin_api_works(sandbox: SandboxProcess) -> None:
    sandbox.faults(outage=True)
    with pytest.raises(httpx.TransportError):
        get_member(sandbox, MEMBER)
    with pytest.raises(httpx.TransportError):
        post_invoice(sandbox, sale())
    assert sandbox.invoices() == []
    assert sandbox.requests()["member"] == 1
    sandbox.clear_faults()
    assert get_member(sandbox, MEMBER).status_code == 200


def test_auth_fail_answers_401_even_to_the_right_token(sandbox: SandboxProcess) -> None:
    sandbox.faults(auth_fail=True)
    for response in (get_member(sandbox, MEMBER), post_invoice(sandbox, sale())):
        assert (response.status_code, response.json()) == (401, {"error": "invalid_token"})


def test_faults_are_merged_read_back_and_cleared(sandbox: SandboxProcess) -> None:
    sandbox.faults(latency_ms=5)
    current = sandbox.faults(error_rate=0.25)
    assert (current["latency_ms"], current["error_rate"], current["error_status"]) == (5, 0.25, 503)
    assert sandbox.faults() == current
    sandbox.clear_faults()
    assert sandbox.faults()["latency_ms"] == 0 and sandbox.faults()["error_rate"] == 0


@pytest.mark.parametrize("body", [
    b"not json", b"[1, 2]", b'{"latency": 5}', b'{"error_rate": 2}', b'{"latency_ms": -1}',
    b'{"error_status": 200}', b'{"outage": "sometimes"}',
], ids=["not-json", "list", "unknown-key", "rate-above-one", "negative-latency", "status-not-error",
        "outage-not-bool"])
def test_garbage_to_the_admin_faults_endpoint_is_400_and_changes_nothing(
        sandbox: SandboxProcess, body: bytes) -> None:
    before = sandbox.faults()
    response = sandbox.admin.post("/sandbox/faults", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_faults" and response.json()["detail"]
    assert sandbox.faults() == before


def test_fault_options_on_the_command_line_are_the_starting_faults() -> None:
    with running_sandbox(extra_args=["--error-rate", "1", "--error-status", "500"]) as sandbox:
        assert sandbox.faults()["error_status"] == 500
        assert get_member(sandbox, MEMBER).status_code == 500


# -- embedding ----------------------------------------------------------------------------------------------
def test_embedded_sandbox_picks_a_free_port_serves_and_stops() -> None:
    embedded = EmbeddedSandbox("tok", "demo").start()
    try:
        assert embedded.url.startswith("http://127.0.0.1:") and not embedded.url.endswith(":0")
        response = httpx.get(f"{embedded.url}/agora/member/{CARD}", params={"_token": "tok", "ow_account": "demo"})
        assert response.json()["id"] == MEMBER
    finally:
        embedded.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{embedded.url}/sandbox/faults", timeout=2)
