"""The cloud token never leaves the bridge except towards the cloud, and the local token is never echoed.

A busy day in miniature runs against the daemon process with two distinctive tokens: sales, look-ups, a POS
configured with the wrong token (even with the cloud token), malformed requests, a 422, the cloud refusing the
token (401) and an outage. Then every place a person or a program could read is searched for either token: the
daemon's log (text and JSON formats, at DEBUG, where HTTP client lines with URLs appear), ``/metrics``,
``/v1/status``, every response body and header the POS received, and the CLI's output.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import DaemonProcess, invoice
from tests.support.sandbox import running_sandbox

CLOUD_TOKEN = "cloudTOKEN-Zx81Qw7Lm3Np5Rt9"
LOCAL_TOKEN = "localTOKEN-Hb42Kd6Jf8Gs1Vc0"
MEMBER = "OW7K2M9Q"


def pieces(token: str) -> list[str]:
    """The token and its tail: a half-redacted token is a leaked token."""
    return [token, token[-12:]]


class Day:
    """A POS's calls, keeping everything it was told."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.seen: list[str] = []

    def keep(self, response: httpx.Response) -> httpx.Response:
        self.seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response

    def post(self, body: bytes | dict, **kwargs: object) -> httpx.Response:
        return self.keep(self.daemon.post_invoice(body, **kwargs))  # type: ignore[arg-type]

    def member(self, member_id: str) -> httpx.Response:
        return self.keep(self.daemon.get_member(member_id))

    def raw(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        return self.keep(self.daemon.client.request(method, url, **kwargs))  # type: ignore[arg-type]

    def cli(self, *args: str) -> None:
        result = self.daemon.cli(*args)
        self.seen.append(f"{args} -> {result.returncode}\n{result.stdout}\n{result.stderr}")


def busy_day(day: Day, sandbox) -> None:  # noqa: ANN001 - the sandbox helper
    daemon = day.daemon
    # sales and look-ups while all is well
    for number in range(1, 4):
        assert day.post(invoice(number)).status_code == 200
    assert day.member(MEMBER).status_code == 200
    assert day.member("ZQ9999XY").status_code == 404
    day.member("not a card!")
    # a POS configured wrongly: no token, a wrong one, the CLOUD token, disagreeing query and header
    body = json.dumps(invoice(50)).encode()
    headers = {"Content-Type": "application/json"}
    assert day.raw("POST", "/agora/invoices", content=body, headers=headers).status_code == 401
    assert day.raw("POST", "/agora/invoices", content=body, headers=headers,
                   params={"_token": "guessed-token-1"}).status_code == 401
    assert day.raw("POST", "/agora/invoices", content=body, headers=headers,
                   params={"_token": CLOUD_TOKEN}).status_code == 401
    assert day.raw("GET", f"/agora/member/{MEMBER}", params={"_token": CLOUD_TOKEN}).status_code == 401
    assert day.raw("POST", "/agora/invoices", content=body, params={"_token": LOCAL_TOKEN},
                   headers={**headers, "Authorization": f"Bearer {CLOUD_TOKEN}"}).status_code == 401
    # malformed requests carrying the right token
    assert day.post(b'{"Serie": "T1", "Number": ').status_code == 400
    assert day.post(b"<xml/>", content_type="text/xml").status_code == 415
    assert day.raw("GET", "/agora/nowhere", params={"_token": LOCAL_TOKEN}).status_code == 404
    assert day.raw("PUT", "/agora/invoices", params={"_token": LOCAL_TOKEN}).status_code == 405
    # the cloud refuses an invoice for good
    unreadable = invoice(40)
    unreadable["Totals"]["GrossAmount"] = "twelve"
    day.post(unreadable)
    daemon.wait_for(lambda: daemon.status()["queue"]["rejected"] == 1, what="422 recorded")
    # the cloud refuses the bridge's token
    sandbox.faults(auth_fail=True)
    assert day.post(invoice(60)).status_code == 202
    day.member(MEMBER)
    daemon.wait_for(lambda: daemon.status()["delivery"]["paused"], what="delivery paused")
    day.keep(daemon.client.get("/v1/status", params={"_token": LOCAL_TOKEN}))
    # then the line goes down
    sandbox.faults(auth_fail=False, outage=True)
    assert day.post(invoice(70)).status_code == 202
    assert day.member(MEMBER).headers.get("x-posbridge-cache") == "stale"
    day.keep(daemon.client.get("/v1/status", params={"_token": LOCAL_TOKEN}))
    # and comes back; everything pending goes out
    sandbox.faults(outage=False)
    daemon.wait_for(lambda: daemon.status()["queue"]["pending"] == 0, timeout=30, what="queue drained")
    # the technician looks
    day.cli("queue", "list", "--state", "rejected")
    day.cli("queue", "show", "doc:Serie=T1;Number=40")
    day.cli("token", "check")
    day.cli("doctor", "--json")
    day.keep(daemon.client.get("/metrics"))
    day.keep(daemon.client.get("/v1/status", params={"_token": LOCAL_TOKEN}))
    day.keep(daemon.client.get("/v1/scans/last", params={"_token": LOCAL_TOKEN}))
    day.keep(daemon.client.get("/"))


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_token_in_log_metrics_status_or_any_answer_after_a_busy_day(tmp_path: Path, log_format: str) -> None:
    with running_sandbox(token=CLOUD_TOKEN) as sandbox:
        daemon = DaemonProcess(tmp_path, sandbox.url, CLOUD_TOKEN, sandbox.account, local_token=LOCAL_TOKEN,
                               overrides={"logging": {"format": log_format, "level": "debug"}})
        daemon.start()
        day = Day(daemon)
        try:
            busy_day(day, sandbox)
        finally:
            code = daemon.terminate()
            daemon.client.close()
    assert code == 0
    log = daemon.log_path.read_text(errors="replace")
    assert "delivery paused" in log and "stopped cleanly" in log  # the log did record the day
    if log_format == "json":
        entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert len(entries) > 10 and all({"ts", "level", "msg"} <= set(e) for e in entries)
    assert len(day.seen) > 20
    everything = {"log": log, **{f"answer {i}": text for i, text in enumerate(day.seen)}}
    for where, text in everything.items():
        for token in (CLOUD_TOKEN, LOCAL_TOKEN):
            for piece in pieces(token):
                assert piece not in text, f"{piece!r} leaked into the {where}: ...{_around(text, piece)}..."


def test_a_cloud_token_in_the_url_is_redacted_when_the_cloud_rejects_the_connection(tmp_path: Path) -> None:
    """With the cloud unreachable, the error texts built from httpx exceptions carry no URL with the token."""
    with running_sandbox(token=CLOUD_TOKEN) as sandbox:
        daemon = DaemonProcess(tmp_path, "http://127.0.0.1:9", CLOUD_TOKEN, sandbox.account,
                               local_token=LOCAL_TOKEN, overrides={"logging": {"level": "debug"}})
        daemon.start()
        try:
            answers = [daemon.post_invoice(invoice(1)).text, daemon.get_member(MEMBER).text]
            time.sleep(1.0)
            answers.append(json.dumps(daemon.status()))
        finally:
            assert daemon.terminate() == 0
            daemon.client.close()
    text = daemon.log_path.read_text() + "".join(answers)
    assert "127.0.0.1:9" in text or "cannot connect" in text  # the failure itself is reported
    assert CLOUD_TOKEN not in text and LOCAL_TOKEN not in text


def _around(text: str, piece: str, width: int = 80) -> str:
    at = text.find(piece)
    return text[max(0, at - width): at + len(piece) + width]
