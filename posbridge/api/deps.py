"""What a route may ask FastAPI for: the running :class:`~posbridge.bridge.Bridge`, typed."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from posbridge.bridge import Bridge


async def _bridge(request: Request) -> Bridge:
    # async: FastAPI would run a plain function in a worker thread, a thread hand-off on every request
    return request.app.state.bridge  # type: ignore[no-any-return]


RunningBridge = Annotated[Bridge, Depends(_bridge)]
"""A route parameter ``bridge: RunningBridge`` receives the daemon's parts."""
