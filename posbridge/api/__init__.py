"""The local HTTP server the POS talks to: Ágora-compatible routes, /v1 routes, health and metrics."""

from __future__ import annotations

from fastapi import FastAPI

from posbridge import __version__
from posbridge.api import errors, events, health, invoices, members
from posbridge.bridge import Bridge


def create_app(bridge: Bridge, local_token: str) -> FastAPI:
    """The ASGI app over the daemon's running parts. Routes read ``bridge`` through
    :data:`posbridge.api.deps.RunningBridge`; the token the POS must present is ``local_token``."""
    app = FastAPI(title="posbridge", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.bridge = bridge
    app.state.local_token = local_token
    app.state.scan_hub = getattr(bridge, "scan_hub", None)
    errors.install(app)
    app.include_router(invoices.router)
    app.include_router(members.router)
    app.include_router(health.router)
    app.include_router(events.router)
    return app
