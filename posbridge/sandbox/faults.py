"""Fault injection for the sandbox's cloud routes, as a pure ASGI middleware.

Only paths under `/agora/` (the cloud calls) are affected; the admin API under `/sandbox/` never is, so a
test can always read what happened and switch faults off. Order of effects for one cloud call:

1. the call is counted (`GET /sandbox/requests`), whatever happens next;
2. `latency_ms` is slept;
3. `outage`: the connection is dropped with no HTTP answer;
4. `auth_fail`: 401 `{"error": "invalid_token"}`;
5. `error_rate`: `error_status` (+ `Retry-After` when `retry_after` is set);
6. `reset_rate` (invoice calls only): the request is handled and recorded, then the connection is dropped.

"Dropped" means a TCP reset where the server is uvicorn (the transport is reached through the server's
bound `receive` method, see `uvicorn.protocols.http.h11_impl.RequestResponseCycle`): the client sees a
connection error, never a status. Under a server without a reachable transport the call never answers
until the client gives up, which a client sees as a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import struct
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from posbridge.sandbox.state import SandboxState

log = logging.getLogger("posbridge.sandbox")

CLOUD_PREFIX = "/agora/"
MEMBER_PREFIX = "/agora/member/"
INVOICES_PATH = "/agora/invoices"


def classify(path: str) -> tuple[str, str | None]:
    """Route name for the request counters (`member`, `invoices` or `other`) and the member id if any."""
    if path.startswith(MEMBER_PREFIX):
        member_id = unquote(path[len(MEMBER_PREFIX):])
        return "member", member_id or None
    if path.rstrip("/") == INVOICES_PATH:
        return "invoices", None
    return "other", None


def _transport(receive: Receive) -> asyncio.Transport | None:
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


async def drop_connection(receive: Receive) -> None:
    """End the HTTP connection behind `receive` without an answer (TCP RST), or hang until the client leaves.

    Returns once the server has noticed the connection is gone, so it does not try to send a 500 itself.
    """
    transport = _transport(receive)
    if transport is None:
        log.warning("sandbox: cannot reach the transport; holding the request until the client gives up")
        while (await receive())["type"] != "http.disconnect":
            pass
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:  # linger 0: close() sends RST instead of FIN, like a dead link or a crashed peer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
    cycle = getattr(receive, "__self__", None)
    for _ in range(50):  # connection_lost runs on a later loop iteration and marks the cycle disconnected
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0)


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                    *headers],
    })
    await send({"type": "http.response.body", "body": payload, "more_body": False})


class FaultInjectionMiddleware:
    """Applies the `SandboxState`'s current faults to cloud calls; see the module docstring."""

    def __init__(self, app: ASGIApp, state: SandboxState, rng: random.Random | None = None) -> None:
        self.app = app
        self.state = state
        self.rng = rng or random.Random()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(CLOUD_PREFIX):
            await self.app(scope, receive, send)
            return
        route, member_id = classify(path)
        self.state.count_call(route, member_id)
        faults = self.state.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.outage:
            await drop_connection(receive)
            return
        if faults.auth_fail:
            await _send_json(send, 401, {"error": "invalid_token"}, [])
            return
        if faults.error_rate and self.rng.random() < faults.error_rate:
            headers = [] if faults.retry_after is None else [(b"retry-after", str(faults.retry_after).encode())]
            await _send_json(send, faults.error_status, {"error": "injected_fault", "status": faults.error_status},
                             headers)
            return
        if route == "invoices" and faults.reset_rate and self.rng.random() < faults.reset_rate:
            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)
            await drop_connection(receive)
            return
        await self.app(scope, receive, send)


__all__ = ["FaultInjectionMiddleware", "classify", "drop_connection"]
