"""The counter screen: a web page at ``/`` for the cashier and the technician, served by the daemon itself.

No build step and no CDN: the page is three files shipped inside the package (``posbridge/api/static/``), so it
works with the internet down. What it shows: the last scans, live; the bridge's state (cloud, delivery, queue,
scanners, outputs); the invoices that need a person, with retry and drop buttons.

Access, and what callers may rely on:

- the page needs the local token once: ``POST /screen/login`` (or opening ``/?_token=LOCAL_TOKEN``) sets an
  HttpOnly, ``SameSite=Strict`` cookie holding an HMAC of the token (never the token itself; changing the local
  token logs every screen out);
- the page's own API (``/screen/state``, ``/screen/events``, the invoice buttons) accepts that cookie; its scan
  stream is the very stream of ``/v1/events`` (same events, same format), which keeps working with ``?_token=``;
- every state-changing request (login, logout, retry, drop) must come from the page itself: its ``Origin`` (or,
  without one, its ``Referer``) must be this bridge's own origin, and the buttons also carry a CSRF token the
  page reads from ``/screen/state`` (a cross-site form or ``fetch`` can send neither). Refused: 403
  ``csrf_refused``;
- the Host header check (:mod:`posbridge.api.hostcheck`) runs before all of this.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from posbridge.api import health
from posbridge.api.errors import ApiError
from posbridge.api.events import KEEPALIVE_SECONDS, scan_stream
from posbridge.outbox import HELD, NEEDS_A_PERSON, REJECTED

#: The buttons: action name -> (Outbox method, the states it applies to); the same operations as
#: `posbridge queue retry/release/drop`. Rejected invoices are retried, held ones released, either dropped.
ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "retry": ("retry", (REJECTED,)),
    "release": ("release", (HELD,)),
    "drop": ("drop", NEEDS_A_PERSON),
}
COOKIE = "posbridge_screen"
COOKIE_MAX_AGE = 400 * 86400  # a cashier should not have to type the token again (browsers cap at 400 days)
CSRF_HEADER = "x-posbridge-csrf"
LISTED = 50
ANSWER_EXCERPT = 2000

router = APIRouter(include_in_schema=False)


def _derive(request: Request, purpose: str) -> str:
    token: str = request.app.state.local_token
    return hmac.new(token.encode("utf-8", "surrogatepass"), purpose.encode(), hashlib.sha256).hexdigest()


def _signed_in(request: Request) -> bool:
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and hmac.compare_digest(cookie.encode("latin-1", "replace"),
                                                      _derive(request, "screen-session").encode())


def _require_session(request: Request) -> None:
    if not _signed_in(request):
        raise ApiError(401, "login_required", "open the counter screen at / and enter the bridge's local token")


def _same_origin(request: Request) -> bool:
    """The request comes from a page of this bridge: Origin (or Referer) names the Host the request was sent to."""
    host = request.headers.get("host")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if origin == "null" or not referer:
            return False
        origin = referer
    parts = urlsplit(origin)
    return host is not None and parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def _require_same_origin(request: Request, *, csrf: bool) -> None:
    if not _same_origin(request):
        raise ApiError(403, "csrf_refused", "this request did not come from the bridge's own counter screen "
                       "(cross-site requests are refused)")
    if csrf:
        given = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(given.encode("latin-1", "replace"), _derive(request, "screen-csrf").encode()):
            raise ApiError(403, "csrf_refused", "missing or wrong CSRF token; reload the counter screen")


def _asset(name: str) -> bytes:
    return resources.files("posbridge.api").joinpath("static", name).read_bytes()


_TYPES = {"screen.html": "text/html; charset=utf-8", "screen.js": "text/javascript; charset=utf-8",
          "screen.css": "text/css; charset=utf-8"}
_SECURITY = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _session_cookie(response: Response, request: Request) -> None:
    response.set_cookie(COOKIE, _derive(request, "screen-session"), max_age=COOKIE_MAX_AGE, httponly=True,
                        samesite="strict", path="/", secure=request.url.scheme == "https")


@router.get("/", response_model=None)
async def page(request: Request) -> Response:
    """The counter screen (it shows its login form itself when the browser has no session).

    ``/?_token=LOCAL_TOKEN`` signs the browser in and redirects to ``/`` (the token leaves the address bar).
    A client that does not ask for HTML gets the service's JSON description, as before the screen existed."""
    token = request.query_params.get("_token")
    if token is not None:
        expected: str = request.app.state.local_token
        if hmac.compare_digest(token.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")):
            response = RedirectResponse("/", status_code=303, headers={"Cache-Control": "no-store"})
            _session_cookie(response, request)
            return response
        return RedirectResponse("/?login=failed", status_code=303, headers={"Cache-Control": "no-store"})
    if "text/html" not in request.headers.get("accept", ""):
        return await health.root()  # programs (doctor, curl) keep getting the JSON description of the service
    return Response(_asset("screen.html"), media_type=_TYPES["screen.html"], headers=_SECURITY)


@router.get("/screen/assets/{name}", response_model=None)
async def asset(name: str) -> Response:
    if name not in _TYPES or name == "screen.html":
        raise ApiError(404, "not_found", "no such file")
    return Response(_asset(name), media_type=_TYPES[name], headers=_SECURITY)


@router.post("/screen/login")
async def login(request: Request) -> JSONResponse:
    """Body: the local token, as JSON ``{"token": ...}``. Sets the session cookie."""
    _require_same_origin(request, csrf=False)
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "bad_request", "send JSON {\"token\": \"...\"}") from None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise ApiError(400, "bad_request", "send JSON {\"token\": \"...\"}")
    expected: str = request.app.state.local_token
    if not hmac.compare_digest(token.strip().encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")):
        raise ApiError(401, "invalid_token", "wrong local token (`posbridge token generate --local` made it; "
                       "the technician has it)")
    response = JSONResponse({"status": "signed_in"}, headers={"Cache-Control": "no-store"})
    _session_cookie(response, request)
    return response


@router.post("/screen/logout")
async def logout(request: Request) -> JSONResponse:
    _require_same_origin(request, csrf=False)
    response = JSONResponse({"status": "signed_out"})
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


def _invoice_view(invoice: Any) -> dict[str, Any]:
    view = invoice.summary()
    answer = invoice.cloud_body
    text = answer.decode("utf-8", "replace") if isinstance(answer, bytes) else None
    view["cloud_answer"] = None if invoice.cloud_status is None and text is None else {
        "status": invoice.cloud_status,
        "body": text[:ANSWER_EXCERPT] if text is not None else None,
        "truncated": text is not None and len(text) > ANSWER_EXCERPT,
    }
    return view


def _needing_a_person(outbox: Any) -> list[dict[str, Any]]:
    rows: list[Any] = []
    for state in NEEDS_A_PERSON:
        rows += outbox.list(state, LISTED)
    rows.sort(key=lambda invoice: invoice.id)
    return [_invoice_view(invoice) for invoice in rows[:LISTED]]


@router.get("/screen/state")
async def state(request: Request) -> JSONResponse:
    """Everything the screen shows besides the live scans, and the CSRF token for its buttons."""
    _require_session(request)
    bridge = request.app.state.bridge
    status = await asyncio.to_thread(bridge.status)
    invoices = await asyncio.to_thread(_needing_a_person, bridge.outbox)
    cloud = status.get("cloud", {})
    cloud = {**cloud, "since_exact": cloud.get("since") is not None}  # the daemon's own record of the change
    hub = getattr(request.app.state, "scan_hub", None)
    return JSONResponse({
        "now": time.time(),
        "csrf": _derive(request, "screen-csrf"),
        "status": {**status, "cloud": cloud},
        "invoices": invoices,
        "last_scan": hub.last if hub is not None else None,
    }, headers={"Cache-Control": "no-store"})


@router.get("/screen/events")
async def screen_events(request: Request) -> StreamingResponse:
    """The scan stream of ``/v1/events`` for the signed-in page (the page never holds the token)."""
    _require_session(request)
    hub = getattr(request.app.state, "scan_hub", None)
    if hub is None:
        raise ApiError(503, "scanners_unavailable", "this bridge has no scan hub")
    keepalive = float(getattr(request.app.state, "sse_keepalive", KEEPALIVE_SECONDS))
    return StreamingResponse(scan_stream(request, hub, keepalive), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/screen/invoices/{invoice_id}/{action}")
async def act(request: Request, invoice_id: str, action: str) -> JSONResponse:
    """Retry, release or drop one invoice that needs a person, as `posbridge queue retry/release/drop` do."""
    _require_same_origin(request, csrf=True)  # first: a cross-site request learns nothing, not even "log in"
    _require_session(request)
    if action not in ACTIONS:
        raise ApiError(404, "not_found", f"no action {action[:40]!r}; use {', '.join(ACTIONS)}")
    if not (invoice_id.isascii() and invoice_id.isdigit() and len(invoice_id) <= 18):
        raise ApiError(404, "not_found", f"no invoice {invoice_id[:40]!r}")
    bridge = request.app.state.bridge
    invoice = await asyncio.to_thread(bridge.outbox.get, int(invoice_id))
    if invoice is None:
        raise ApiError(404, "not_found", f"no invoice {invoice_id} (already dropped?)")
    if invoice.state not in NEEDS_A_PERSON:
        raise ApiError(409, "not_waiting", f"invoice {invoice.id} is {invoice.state}, not waiting for a person")
    method, states = ACTIONS[action]
    if invoice.state not in states:
        raise ApiError(409, "not_applicable", f"invoice {invoice.id} is {invoice.state}: {action} applies to "
                       f"{' or '.join(states)} invoices")
    result = await asyncio.to_thread(getattr(bridge.outbox, method), invoice.id)
    if action != "drop":
        bridge.replayer.wake()
    return JSONResponse({"status": "done", "action": action,
                         "invoice": result.summary() if result is not None else None})
