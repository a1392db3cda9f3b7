"""Health and status: ``/healthz`` (alive), ``/readyz`` (can take invoices), ``/v1/status`` (what a person
needs to see: queue depth, oldest pending age, last delivery, cloud state, pause reason, scanners)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from posbridge import __version__
from posbridge.api.auth import require_local_token
from posbridge.api.deps import RunningBridge
from posbridge.errors import StorageError

router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process and its event loop are alive. Cheap: no database, no cloud."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(bridge: RunningBridge) -> JSONResponse:
    """Ready when invoices can be taken: the database answers, writes work, the file is the one opened (not
    deleted or replaced) and the disk is not below ``[storage] min_free_bytes``. Not ready says why."""
    database = bridge.database
    try:
        await asyncio.wait_for(database.reader.run(lambda c: c.execute("SELECT 1").fetchone()), 2.0)
    except (StorageError, asyncio.TimeoutError) as exc:
        return JSONResponse({"status": "not_ready", "detail": f"database not answering: {exc}"}, status_code=503)
    problem = bridge.guard.ready_problem() if bridge.guard is not None else database.writer.last_error
    if problem:
        return JSONResponse({"status": "not_ready", "detail": problem}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/v1/status", dependencies=[Depends(require_local_token)])
async def status(bridge: RunningBridge) -> JSONResponse:
    return JSONResponse(await asyncio.to_thread(bridge.status))


@router.get("/metrics")
async def metrics(bridge: RunningBridge) -> Response:
    """Prometheus exposition. No card numbers, no tokens: labels are fixed, small sets."""
    body = await asyncio.to_thread(bridge.metrics.render, bridge)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def root() -> JSONResponse:
    return JSONResponse({"service": "posbridge", "version": __version__,
                         "routes": ["/agora/member/{member_id}", "/agora/invoices", "/v1/status", "/v1/events",
                                    "/v1/scans/last", "/healthz", "/readyz", "/metrics"]})
