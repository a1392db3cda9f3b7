"""Accepting an invoice from the POS: store it, try the cloud briefly, and say what the till may rely on.

This is the one front door of the outbox. The HTTP route (:mod:`posbridge.api.invoices`) only translates HTTP
to :meth:`InvoiceDesk.accept` and the :class:`Ack` back; any other front door (a file drop, a second
protocol) calls the same method and makes the same promise:

- an :class:`Ack` is returned only after the invoice's exact bytes are committed (WAL, ``synchronous=FULL``);
  either the cloud answered within ``inline_deadline`` (the Ack carries the cloud's own status and body: its
  2xx, or its permanent refusal, the invoice then kept as rejected for a person), or it is queued (202
  ``{"status": "queued", "id": N}``) and the replayer owns it, or it is held (202 ``{"status": "held"}``: the
  identity of another sale with different content, waiting for a person);
- input that cannot be an invoice raises :class:`~posbridge.errors.InvoiceRefused` and nothing is stored;
- a database that refuses the write raises :class:`~posbridge.errors.StorageError`: nothing may be
  acknowledged, the POS must keep the sale and send it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from posbridge.errors import StorageError
from posbridge.invoice import check_content_type, parse_invoice
from posbridge.logs import mask_member
from posbridge.outbox import HELD, Invoice, Outbox
from posbridge.replay import InlineContext, Replayer

log = logging.getLogger(__name__)

#: What ``on_received`` is told about each request: stored anew, the same sale again, a different sale under a
#: known identity (held for a person), or not stored.
RECEIVED_RESULTS = ("stored", "duplicate", "conflict", "store_failed")


@dataclass(frozen=True)
class Ack:
    """What the POS is told about its invoice: an HTTP status, body and content type to send back as they are.

    ``duplicate`` is True when the invoice was known already (the answer repeats the first one).
    ``invoice_id`` is the outbox row.
    """

    status: int
    body: bytes
    content_type: str
    invoice_id: int
    duplicate: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def queued(cls, invoice: Invoice, *, duplicate: bool = False) -> "Ack":
        body = json.dumps({"status": "queued", "id": invoice.id}).encode()
        return cls(202, body, "application/json", invoice.id, duplicate)

    @classmethod
    def held(cls, invoice: Invoice, *, duplicate: bool = False) -> "Ack":
        """A different sale under a known identity: stored, not delivered, waiting for a person."""
        body = json.dumps({
            "status": "held", "id": invoice.id, "conflicts_with": invoice.conflict_of,
            "detail": "stored but NOT delivered: another invoice with the same id (GlobalId, or workplace, series "
                      "and number) but different content was received before; a person decides on the bridge "
                      f"(posbridge queue release {invoice.id} / queue drop {invoice.id})"}).encode()
        headers = {"X-Posbridge-Conflict": str(invoice.conflict_of)} if invoice.conflict_of is not None else {}
        return cls(202, body, "application/json", invoice.id, duplicate, headers)

    @classmethod
    def cloud(cls, invoice: Invoice, status: int, body: bytes, content_type: str | None,
              *, duplicate: bool = False) -> "Ack":
        return cls(status, body, content_type or "application/json", invoice.id, duplicate)


class InvoiceDesk:
    """Takes invoices in: the outbox stores them, the replayer tries the cloud inline and owns them after.

    Lives on one event loop. Call :meth:`aclose` at shutdown, after the front doors stopped taking requests:
    inline deliveries still running are cancelled (their invoices stay pending and are sent later).
    """

    def __init__(self, outbox: Outbox, replayer: Replayer, *, inline_deadline: float,
                 on_received: Callable[[str], None] | None = None,
                 admit: Callable[[], None] | None = None) -> None:
        self._outbox = outbox
        self._replayer = replayer
        self._inline_deadline = inline_deadline
        self._on_received = on_received or (lambda result: None)
        self._admit = admit or (lambda: None)  # raises StorageError when nothing may be stored now
        self._inline: set[asyncio.Task[Any]] = set()

    async def accept(self, body: bytes, content_type: str | None) -> Ack:
        """Store the invoice, then try the cloud for at most ``inline_deadline``; see the module docstring."""
        content_type = check_content_type(content_type)
        document = parse_invoice(body)
        replayer = self._replayer
        inline = replayer.delivery_allowed_inline()
        deadline = self._inline_deadline
        try:
            self._admit()
            enqueued = await self._outbox.enqueue(
                body, content_type, document, not_before=(time.time() + deadline if inline else None))
        except StorageError:
            self._on_received("store_failed")
            raise
        invoice = enqueued.invoice
        self._on_received(enqueued.result)
        if enqueued.result == "conflict":
            assert enqueued.original is not None
            log.warning("invoice %s (member %s) has the identity of invoice %d but different content: held for a "
                        "person as invoice %d, not delivered (`posbridge queue show %d`, then `queue release %d` "
                        "or `queue drop %d`)", enqueued.original.key, mask_member(invoice.member_id),
                        enqueued.original.id, invoice.id, invoice.id, invoice.id, invoice.id)
            return Ack.held(invoice)
        if enqueued.result == "duplicate":
            if invoice.state == HELD:
                return Ack.held(invoice, duplicate=True)
            if invoice.acked_with_cloud_answer and invoice.cloud_status is not None:
                return Ack.cloud(invoice, invoice.cloud_status, invoice.cloud_body or b"",
                                 invoice.cloud_content_type, duplicate=True)
            return Ack.queued(invoice, duplicate=True)
        if not inline or not replayer.claim(invoice.id):
            replayer.invoice_queued()
            return Ack.queued(invoice)
        return await self._deliver_inline(invoice, deadline)

    async def _deliver_inline(self, invoice: Invoice, deadline: float) -> Ack:
        """While the inline attempt runs the replayer leaves the invoice alone (``not_before``); after a
        crash it is due soon. Exactly one of "the POS got the cloud's answer" and "the POS got 202" wins."""
        context = InlineContext()
        task = asyncio.create_task(self._replayer.deliver(invoice, inline=context), name=f"inline-{invoice.id}")
        self._inline.add(task)
        task.add_done_callback(self._inline.discard)
        done, _ = await asyncio.wait({task}, timeout=deadline)
        if not done and not context.answered:
            context.gave_up = True
            return Ack.queued(invoice)
        outcome = await asyncio.shield(task)
        if outcome.result in ("sent", "rejected") and context.answered and outcome.answer is not None:
            return Ack.cloud(invoice, outcome.answer.status, outcome.answer.body, outcome.answer.content_type)
        return Ack.queued(invoice)

    async def aclose(self) -> None:
        for task in list(self._inline):
            task.cancel()
        await asyncio.gather(*self._inline, return_exceptions=True)
