"""The request body deadline, as ASGI middleware in front of the app (see posbridge/api/connections.py for
the head deadline and the connection limit, which live in the HTTP protocol below the app)."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from posbridge.api.errors import ApiError


class BodyDeadline:
    """ASGI middleware: the app's wait for the request body ends ``timeout`` seconds after the request head
    arrived, with ``408 {"error": "request_timeout"}`` and ``Connection: close``; nothing of that request is
    stored. A client that hangs up in the middle of its body ends the app's read with a quiet error (nobody is
    left to read the answer) instead of a traceback per abandoned upload. Once the body is complete, ``receive``
    is passed through untouched (event streams wait on it for the disconnect)."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        body_done = False
        timeout = self.timeout

        async def bounded_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):  # one timer, no task (wait_for made a task per read)
                    message = await receive()
            except TimeoutError:
                body_done = True
                raise ApiError(408, "request_timeout", f"the request body did not arrive within {timeout:g} s "
                               "([server] body_timeout); nothing was stored, send it again",
                               headers={"Connection": "close"}) from None
            if message["type"] == "http.disconnect":
                body_done = True
                raise ApiError(400, "client_disconnected", "the client closed the connection before the end of "
                               "its request body; nothing was stored", headers={"Connection": "close"})
            if not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, bounded_receive, send)


__all__ = ["BodyDeadline"]
