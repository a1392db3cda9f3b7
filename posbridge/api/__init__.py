"""The local HTTP server the POS talks to: Ágora-compatible routes, /v1 routes, health and metrics."""

from __future__ import annotations

from fastapi import FastAPI

from posbridge import __version__
from posbridge.api import errors, events, health, invoices, members, screen
from posbridge.api.hostcheck import AllowedHosts, HostCheck
from posbridge.bridge import Bridge
from posbridge.config import ServerSettings


def create_app(bridge: Bridge, local_token: str) -> FastAPI:
    """The ASGI app over the daemon's running parts. Routes read ``bridge`` through
    :data:`posbridge.api.deps.RunningBridge`; the token the POS must present is ``local_token``."""
    app = FastAPI(title="posbridge", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.bridge = bridge
    app.state.local_token = local_token
    app.state.scan_hub = getattr(bridge, "scan_hub", None)
    errors.install(app)
    server = getattr(getattr(bridge, "settings", None), "server", None) or ServerSettings()
    app.state.allowed_hosts = AllowedHosts(server.host, server.hostnames)
    app.add_middleware(HostCheck, allowed=app.state.allowed_hosts)
    app.include_router(screen.router)  # before health: "/" is the counter screen for browsers
    app.include_router(invoices.router)
    app.include_router(members.router)
    app.include_router(health.router)
    app.include_router(events.router)
    return app
