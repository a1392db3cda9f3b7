"""The counter screen's HTTP side and the Host header check, over real HTTP against the daemon process.

The browser tests (test_screen_browser.py) show the page works; these try what a browser never sends: garbage
bodies, ids and headers, forged cookies, missing Origin, hostile Host names.
"""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path

import httpx
import pytest

from posbridge.api.hostcheck import AllowedHosts, _machine_addresses, host_of
from tests.support.daemon import DaemonProcess, invoice
from tests.support.sandbox import running_sandbox


@pytest.fixture(scope="module")
def bridge():
    with running_sandbox() as sandbox:
        with tempfile.TemporaryDirectory(prefix="posbridge-screen-api-") as tmp:
            daemon = DaemonProcess(Path(tmp), sandbox.url, sandbox.token, sandbox.account,
                                   overrides={"server": {"hostnames": ["till-3.shop.lan"]}})
            daemon.start()
            daemon.sandbox = sandbox
            yield daemon
            daemon.stop()


def origin(bridge) -> dict[str, str]:
    return {"Origin": bridge.url}


@pytest.fixture
def session(bridge):
    """A client signed in the way the page signs in."""
    with httpx.Client(base_url=bridge.url, timeout=30) as client:
        response = client.post("/screen/login", json={"token": bridge.local_token}, headers=origin(bridge))
        assert response.status_code == 200, response.text
        yield client


def csrf(session) -> str:
    return session.get("/screen/state").json()["csrf"]


# -- Host header check --

@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/", "/v1/status", "/agora/member/OW7K2M9Q",
                                  "/screen/state", "/v1/events"])
def test_a_foreign_host_name_is_refused_on_every_route(bridge, path):
    response = bridge.client.get(path, headers={"Host": f"evil.example:{bridge.port}"},
                                 params={"_token": bridge.local_token})
    assert response.status_code == 421
    assert response.json()["error"] == "host_not_allowed"
    assert "evil.example" in response.json()["detail"] and "[server] hostnames" in response.json()["detail"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST.", "[::1]", "127.0.0.2", "till-3.shop.lan",
                                  "Till-3.Shop.Lan"])
def test_own_names_are_answered_with_or_without_the_port(bridge, host):
    for value in (host, f"{host}:{bridge.port}", f"{host}:1"):
        assert bridge.client.get("/healthz", headers={"Host": value}).status_code == 200, value


@pytest.mark.parametrize("host", ["", " ", "a b", "127.0.0.1:80:80", "[::1", "[evil]:80", "evil@127.0.0.1",
                                  "127.0.0.1/x", "127.0.0.1:port", "x" * 5000, "127.0.0.1.evil.example",
                                  "localhost.evil.example", "0.0.0.0", "192.0.2.1"])
def test_garbage_host_headers_are_refused(bridge, host):
    try:
        response = bridge.client.get("/healthz", headers={"Host": host})
    except httpx.HTTPError:
        return  # the HTTP server itself closed on it: refused too
    assert response.status_code in (400, 421), host


def test_non_ascii_host_bytes_are_refused(bridge):
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: \xc3\xa9vil.example\r\nConnection: close\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.split(b" ")[1] in (b"400", b"421")


def test_a_request_without_host_is_answered(bridge):
    """HTTP/1.0 clients may omit Host; a browser never does, so this is no rebinding path (see hostcheck.py)."""
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and b'"ok"' in answer


def test_a_wildcard_listener_answers_to_the_machines_names_and_addresses():
    allowed = AllowedHosts("0.0.0.0", ["pos.shop.lan"])
    hostname = socket.gethostname().lower()
    assert allowed.allows(hostname)
    assert allowed.allows(hostname.split(".")[0] + ".local")
    assert allowed.allows("pos.shop.lan")
    assert allowed.allows("127.0.0.1") and allowed.allows("::1")
    for address in {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}:
        assert allowed.allows(address), address
    assert not allowed.allows("evil.example")
    foreign = "203.0.113.77"  # TEST-NET-3, unless this machine happens to have it
    assert foreign in _machine_addresses() or not allowed.allows(foreign)


def test_a_specific_listen_address_answers_to_itself_and_loopback_only():
    allowed = AllowedHosts("192.168.1.20")
    assert allowed.allows("192.168.1.20") and allowed.allows("localhost")
    assert not allowed.allows(socket.gethostname().lower()) or socket.gethostname().lower() == "localhost"


@pytest.mark.parametrize("header, host", [("Till:8080", "till"), ("[::1]:8080", "::1"), ("[::1]", "::1"),
                                          ("a.b.", "a.b"), ("[zz]", None), ("x:y", None), ("", None)])
def test_host_of(header, host):
    assert host_of(header) == host


# -- the page and its sign-in --

def test_a_browser_gets_the_page_and_a_program_gets_the_service_description(bridge):
    page = bridge.client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert bridge.client.get("/").json()["service"] == "posbridge"


def test_assets_are_served_from_the_package_and_nothing_else(bridge):
    js = bridge.client.get("/screen/assets/screen.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert bridge.client.get("/screen/assets/screen.css").status_code == 200
    for name in ("screen.html", "nope.js", "..%2F__init__.py", "%00"):
        assert bridge.client.get(f"/screen/assets/{name}").status_code == 404, name


def test_the_token_in_the_address_signs_in_with_an_httponly_strict_cookie(bridge):
    response = httpx.get(bridge.url + "/", params={"_token": bridge.local_token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert bridge.local_token not in cookie
    wrong = httpx.get(bridge.url + "/", params={"_token": "nope"}, follow_redirects=False)
    assert wrong.headers["location"] == "/?login=failed" and "set-cookie" not in wrong.headers


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"token": 5}', b'{"token": ""}', b'{"tok": "x"}',
                                  b'{"token": "\\ud800"}', b"\xff\xfe"])
def test_login_with_garbage_is_refused(bridge, body):
    response = bridge.client.post("/screen/login", content=body, headers=origin(bridge))
    assert response.status_code in (400, 401)
    assert "set-cookie" not in response.headers
    assert response.json()["error"] in ("bad_request", "invalid_token")


def test_login_from_another_site_or_without_origin_is_refused(bridge):
    body = {"token": bridge.local_token}
    assert bridge.client.post("/screen/login", json=body).status_code == 403
    assert bridge.client.post("/screen/login", json=body, headers={"Origin": "http://evil.example"}).status_code == 403
    assert bridge.client.post("/screen/login", json=body, headers={"Origin": "null"}).status_code == 403


def test_the_screens_api_needs_the_session(bridge):
    for path in ("/screen/state", "/screen/events"):
        assert httpx.get(bridge.url + path).json()["error"] == "login_required"
        forged = httpx.get(bridge.url + path, cookies={"posbridge_screen": bridge.local_token})
        assert forged.status_code == 401


def test_state_shows_the_bridge_and_the_invoices_that_need_a_person(bridge, session):
    state = session.get("/screen/state").json()
    assert state["status"]["cloud"]["reachable"] is True and state["status"]["cloud"]["since"]
    assert "queue" in state["status"] and "outputs" in state["status"] and isinstance(state["invoices"], list)
    assert state["csrf"] and bridge.local_token not in str(state)


def test_the_screens_event_stream_is_the_scan_stream(bridge, session):
    with session.stream("GET", "/screen/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert next(response.iter_lines()).startswith("retry:")


def rejected_invoice(bridge, number: int) -> int:
    bridge.sandbox.faults(error_rate=1.0, error_status=422)
    try:
        bridge.post_invoice(invoice(number, serie="API"))
        return bridge.wait_for(lambda: _find_rejected(bridge, f"doc:Serie=API;Number={number}"), what="rejected invoice")
    finally:
        bridge.sandbox.clear_faults()


def _find_rejected(bridge, key: str) -> int | None:
    shown = bridge.cli("queue", "show", key)
    if shown.returncode != 0 or '"state": "rejected"' not in shown.stdout:
        return None
    return int(json.loads(shown.stdout)["id"])


def test_buttons_refuse_requests_without_origin_or_csrf_token(bridge, session):
    invoice_id = rejected_invoice(bridge, 1)
    url = f"/screen/invoices/{invoice_id}/drop"
    assert session.post(url).json()["error"] == "csrf_refused"  # no Origin
    assert session.post(url, headers=origin(bridge)).json()["error"] == "csrf_refused"  # no CSRF token
    assert session.post(url, headers={**origin(bridge), "X-Posbridge-CSRF": "0" * 64}).status_code == 403
    assert session.post(url, headers={"Origin": "http://evil.example", "X-Posbridge-CSRF": csrf(session)}
                        ).status_code == 403
    assert _find_rejected(bridge, "doc:Serie=API;Number=1") == invoice_id  # still there


@pytest.mark.parametrize("path", ["/screen/invoices/abc/retry", "/screen/invoices/-1/retry",
                                  "/screen/invoices/99999999999999999999/retry", "/screen/invoices/1e3/retry",
                                  "/screen/invoices/424242/retry", "/screen/invoices/1/explode"])
def test_buttons_with_garbage_ids_or_actions_are_404(bridge, session, path):
    response = session.post(path, headers={**origin(bridge), "X-Posbridge-CSRF": csrf(session)})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_retry_and_drop_from_the_screen_do_what_the_queue_commands_do(bridge, session):
    headers = {**origin(bridge), "X-Posbridge-CSRF": csrf(session)}
    first, second = rejected_invoice(bridge, 2), rejected_invoice(bridge, 3)
    retried = session.post(f"/screen/invoices/{first}/retry", headers=headers)
    assert retried.status_code == 200 and retried.json()["invoice"]["state"] == "pending"
    bridge.wait_for(lambda: bridge.sandbox.invoice("API-2") is not None, what="the retried invoice delivered")
    again = session.post(f"/screen/invoices/{first}/retry", headers=headers)
    assert again.status_code in (404, 409)  # sent: nothing for a person to do
    dropped = session.post(f"/screen/invoices/{second}/drop", headers=headers)
    assert dropped.status_code == 200
    assert bridge.cli("queue", "show", "doc:Serie=API;Number=3").returncode != 0
    assert bridge.sandbox.invoice("API-3") is None
