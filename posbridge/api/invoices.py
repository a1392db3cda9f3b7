"""``POST /agora/invoices``: the POS hands over a sale.

The promise to the till: a 2xx answer means the invoice's exact bytes are on disk. Either the cloud took it
within ``inline_deadline`` (the POS gets the cloud's own status and body), or it is queued (202
``{"status": "queued", "id": N}``) and the replayer owns it. Anything that could not be stored gets 503; bad
input gets 400/401/413/415, each as a JSON error, and is not stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from posbridge.api.auth import require_local_token
from posbridge.api.errors import ApiError
from posbridge.errors import StorageError
from posbridge.outbox import Invoice
from posbridge.replay import InlineContext

log = logging.getLogger(__name__)
router = APIRouter()


def _check_content_type(value: str | None) -> str:
    """JSON or nothing else: ``application/json`` or ``application/*+json``, any parameters."""
    if value is None or not value.strip():
        raise ApiError(415, "unsupported_media_type", "missing Content-Type; send the invoice as application/json")
    media = value.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return value
    raise ApiError(415, "unsupported_media_type", f"Content-Type {media!r} is not JSON; send application/json")


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


def _parse(body: bytes) -> Any:
    if not body.strip():
        raise ApiError(400, "invalid_json", "the body is empty; send the invoice as a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not UTF-8: byte 0x{body[exc.start]:02x} at offset "
                       f"{exc.start} cannot be decoded") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc.msg} at line {exc.lineno} "
                       f"column {exc.colno} (offset {exc.pos})") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the JSON is nested too deeply to be an invoice") from None
    if not isinstance(document, dict):
        raise ApiError(400, "invalid_json", f"an invoice must be a JSON object, not a {type(document).__name__}")
    return document


def _queued(invoice: Invoice, *, duplicate: bool = False) -> JSONResponse:
    headers = {"X-Posbridge-Duplicate": "true"} if duplicate else None
    return JSONResponse({"status": "queued", "id": invoice.id}, status_code=202, headers=headers)


def _cloud_answer(status: int, body: bytes, content_type: str | None, *, duplicate: bool = False) -> Response:
    headers = {"X-Posbridge-Duplicate": "true"} if duplicate else None
    return Response(content=body, status_code=status, media_type=content_type or "application/json",
                    headers=headers)


@router.post("/agora/invoices", dependencies=[Depends(require_local_token)])
async def post_invoice(request: Request) -> Response:
    """Store, then try the cloud briefly, then answer. ``ow_account`` is accepted and ignored."""
    ctx = request.app.state.bridge
    content_type = _check_content_type(request.headers.get("content-type"))
    body = await _read_body(request, ctx.settings.server.max_body_bytes)
    document = _parse(body)
    replayer = ctx.replayer
    inline = replayer.delivery_allowed_inline()
    deadline = ctx.settings.server.inline_deadline
    try:
        invoice, created = await ctx.outbox.enqueue(
            body, content_type, document, not_before=(None if not inline else _later(deadline)))
    except StorageError as exc:
        ctx.metrics.invoice_received("store_failed")
        raise ApiError(503, "storage_unavailable", f"the invoice was NOT stored, keep it in the POS and send it "
                       f"again: {exc}") from None
    if not created:
        ctx.metrics.invoice_received("duplicate")
        if invoice.acked_with_cloud_answer and invoice.cloud_status is not None:
            return _cloud_answer(invoice.cloud_status, invoice.cloud_body or b"", invoice.cloud_content_type,
                                 duplicate=True)
        return _queued(invoice, duplicate=True)
    ctx.metrics.invoice_received("stored")
    if not inline or not replayer.claim(invoice.id):
        replayer.wake()
        return _queued(invoice)
    context = InlineContext()
    task = asyncio.create_task(replayer.deliver(invoice, inline=context), name=f"inline-{invoice.id}")
    ctx.background.add(task)
    task.add_done_callback(ctx.background.discard)
    done, _ = await asyncio.wait({task}, timeout=deadline)
    if not done and not context.answered:
        context.gave_up = True
        return _queued(invoice)
    outcome = await asyncio.shield(task)
    if outcome.result == "sent" and context.answered and outcome.answer is not None:
        return _cloud_answer(outcome.answer.status, outcome.answer.body, outcome.answer.content_type)
    return _queued(invoice)


def _later(seconds: float) -> float:
    """While the inline attempt runs, the replayer leaves the invoice alone; after a crash it is due soon."""
    import time

    return time.time() + seconds
