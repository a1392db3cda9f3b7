"""Scans for web POS plugins and customer displays: ``GET /v1/events`` (Server-Sent Events) and
``GET /v1/scans/last`` (for integrations that poll).

Both need the local token (``?_token=`` works from a browser's ``EventSource``, which cannot set headers). The
stream sends ``event: scan`` with the hub's published dict as JSON, a comment line every 15 s so proxies and
idle timeouts keep the connection open, and ends when the client goes away or the hub closes (daemon stopping).
The hub is ``request.app.state.scan_hub`` (a :class:`~posbridge.scanners.hub.ScanHub`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from posbridge.api.auth import require_local_token
from posbridge.errors import ApiError
from posbridge.scanners.hub import ScanHub

KEEPALIVE_SECONDS = 15.0
RETRY_MS = 2000  # how soon a browser's EventSource reconnects after the daemon restarts

router = APIRouter(dependencies=[Depends(require_local_token)])


def _hub(request: Request) -> ScanHub:
    hub = getattr(request.app.state, "scan_hub", None)
    if hub is None:
        raise ApiError(503, "scanners_unavailable", "this bridge has no scan hub (scanners are not set up)")
    return hub  # type: ignore[no-any-return]


def to_json(value: Any) -> str:
    """Compact ASCII JSON: every non-ASCII character escaped. Scanned text can hold anything (U+2028, U+0085,
    lone surrogates), and some SSE clients split lines on those; escaped, an event is always one clean
    ``data:`` line that every EventSource parses back to the same text."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def format_event(scan: dict[str, Any]) -> str:
    """One SSE message."""
    return f"event: scan\ndata: {to_json(scan)}\n\n"


async def scan_stream(request: Request, hub: ScanHub, keepalive: float) -> AsyncIterator[str]:
    subscription = hub.subscribe()
    try:
        yield f"retry: {RETRY_MS}\n: connected\n\n"
        while True:
            try:
                scan = await subscription.get(timeout=keepalive)
            except StopAsyncIteration:
                return
            if scan is None:
                if await request.is_disconnected():
                    return
                yield ": keep-alive\n\n"
            else:
                yield format_event(scan)
    finally:
        await subscription.aclose()


@router.get("/v1/events")
async def events(request: Request) -> StreamingResponse:
    """Server-Sent Events: one ``scan`` event per published scan, from now on."""
    hub = _hub(request)
    keepalive = float(getattr(request.app.state, "sse_keepalive", KEEPALIVE_SECONDS))
    return StreamingResponse(scan_stream(request, hub, keepalive), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/v1/scans/last", response_model=None)
async def last_scan(request: Request) -> Response:
    """The last published scan, or 204 No Content when nothing was scanned since the daemon started."""
    last = _hub(request).last
    if last is None:
        return Response(status_code=204)
    return Response(to_json(last), media_type="application/json", headers={"Cache-Control": "no-store"})
