"""What a route may ask FastAPI for: the running :class:`~posbridge.bridge.Bridge`, typed."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from posbridge.bridge import Bridge


def _bridge(request: Request) -> Bridge:
    return request.app.state.bridge  # type: ignore[no-any-return]


RunningBridge = Annotated[Bridge, Depends(_bridge)]
"""A route parameter ``bridge: RunningBridge`` receives the daemon's parts."""
