"""``POST /agora/invoices``: the POS hands over a sale.

This route only translates HTTP: it reads the body (bounded by ``[server] max_body_bytes``), hands it to
:meth:`posbridge.acceptance.InvoiceDesk.accept` and sends the :class:`~posbridge.acceptance.Ack` back. The
promise to the till (a 2xx means the invoice's exact bytes are on disk) is the desk's; see
:mod:`posbridge.acceptance`. Anything that could not be stored gets 503; bad input gets 400/401/413/415, each
as a JSON error, and is not stored.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from posbridge.api.auth import require_local_token
from posbridge.api.deps import RunningBridge
from posbridge.errors import ApiError, InvoiceRefused, StorageError

router = APIRouter()

#: InvoiceRefused.code -> the HTTP status the POS gets.
REFUSAL_STATUS = {"unsupported_media_type": 415, "payload_too_large": 413, "invalid_json": 400, "bad_request": 400}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "bad_request", f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise ApiError(413, "payload_too_large", f"the invoice is {int(declared)} bytes; the limit is {limit} "
                           "bytes ([server] max_body_bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"the invoice is over the limit of {limit} bytes "
                           "([server] max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/agora/invoices", dependencies=[Depends(require_local_token)])
async def post_invoice(request: Request, bridge: RunningBridge) -> Response:
    """Store, then try the cloud briefly, then answer. ``ow_account`` is accepted and ignored."""
    body = await _read_body(request, bridge.settings.server.max_body_bytes)
    try:
        ack = await bridge.desk.accept(body, request.headers.get("content-type"))
    except InvoiceRefused as exc:
        raise ApiError(REFUSAL_STATUS.get(exc.code, 400), exc.code, exc.detail) from None
    except StorageError as exc:
        raise ApiError(503, "storage_unavailable", f"the invoice was NOT stored, keep it in the POS and send it "
                       f"again: {exc}") from None
    headers = dict(ack.headers)
    if ack.duplicate:
        headers["X-Posbridge-Duplicate"] = "true"
    return Response(content=ack.body, status_code=ack.status, media_type=ack.content_type, headers=headers)
