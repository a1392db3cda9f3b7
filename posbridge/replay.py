"""Background delivery of the outbox to the cloud.

The rules (ARCHITECTURE.md, invoice path):

- due invoices are sent oldest first, at most ``concurrency`` at a time, each with its own key as
  ``Idempotency-Key`` on every attempt, forever;
- 2xx -> ``sent``; 401/403 -> delivery as a whole is *paused* (no invoice is rejected for a bad token) and
  one invoice is tried every ``auth_probe_interval`` until the cloud accepts the token again;
  other 4xx -> ``rejected`` with the cloud's answer kept for a person;
  anything transient -> the invoice is due again at ``now + backoff(attempts)`` (full jitter via tenacity's
  ``wait_random_exponential``, capped), or later when the cloud's ``Retry-After`` says so (capped too);
- while the cloud looks down (connection failures, 429, 502-504) every invoice waits behind one probe, so a
  backlog of thousands does not hammer a cloud that is coming back;
- the schedule is in the database: a restart resumes it, and an invoice that was in flight at a crash is
  still ``pending`` and due, so it is sent again (the cloud discards the repeat by its key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from tenacity import wait_random_exponential

from posbridge.cloud import CloudAnswer, CloudClient
from posbridge.config import DeliverySettings
from posbridge.errors import CloudAuthError, CloudRejected, CloudUnavailable, StorageError
from posbridge.outbox import Invoice, Outbox

log = logging.getLogger(__name__)

#: Statuses that mean "the cloud as a whole is not taking work now", not "this invoice has a problem".
HOLD_STATUSES = frozenset({429, 502, 503, 504})
PURGE_EVERY = 3600.0


@dataclass
class _Attempt:
    """tenacity's wait strategies read only ``attempt_number`` from their argument."""

    attempt_number: int


@dataclass
class InlineContext:
    """Shared between the POST handler and an inline delivery, both on the event loop.

    The handler sets ``gave_up`` at its deadline; the delivery sets ``answered`` when the cloud's answer
    arrived first. Exactly one of them wins, so the database records truthfully whether the POS saw the
    cloud's answer or a 202.
    """

    gave_up: bool = False
    answered: bool = False


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt ended with: ``sent``, ``rejected``, ``retry``, ``paused`` or ``error``."""

    result: str
    answer: CloudAnswer | None = None
    detail: str = ""


class Replayer:
    """Owns delivery: the background loop and the inline attempts of the POST handler."""

    def __init__(self, outbox: Outbox, cloud: CloudClient, settings: DeliverySettings,
                 on_outcome: Callable[[Outcome, float], None] | None = None) -> None:
        self._outbox = outbox
        self._cloud = cloud
        self._settings = settings
        self._wait = wait_random_exponential(multiplier=settings.backoff_base, max=settings.backoff_cap)
        self._in_flight: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._hold_until = 0.0
        self._on_outcome = on_outcome
        self.cloud_reachable: bool | None = None
        self.last_failure: str | None = None
        self.paused_reason: str | None = None
        self.paused_since: float | None = None
        self.last_delivery_at: float | None = None
        self.last_delivery_result: str | None = None
        self._next_probe_at = 0.0
        self._last_purge = 0.0

    # -- the schedule --

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: uniform in [0, min(cap, base * 2**(attempts-1))]."""
        return float(self._wait(_Attempt(max(1, attempts))))

    def delivery_allowed_inline(self) -> bool:
        """Whether a POST should try the cloud before answering: not while paused, on hold, or while the
        last attempt found the cloud unreachable (the replayer keeps probing; the till does not wait)."""
        return self.paused_reason is None and self.cloud_reachable is not False and time.time() >= self._hold_until

    def claim(self, invoice_id: int) -> bool:
        """Reserve an invoice for one delivery; False if someone is delivering it already."""
        if invoice_id in self._in_flight:
            return False
        self._in_flight.add(invoice_id)
        return True

    def wake(self) -> None:
        self._wake.set()

    def status(self) -> dict[str, Any]:
        return {
            "cloud_reachable": self.cloud_reachable,
            "last_failure": self.last_failure,
            "paused": self.paused_reason is not None,
            "paused_reason": self.paused_reason,
            "paused_since": self.paused_since,
            "hold_until": self._hold_until if self._hold_until > time.time() else None,
            "last_delivery_at": self.last_delivery_at,
            "last_delivery_result": self.last_delivery_result,
            "in_flight": len(self._in_flight),
        }

    # -- one delivery --

    async def deliver(self, invoice: Invoice, *, inline: InlineContext | None = None,
                      timeout: float | None = None) -> Outcome:
        """Send one claimed invoice and record the outcome; releases the claim. Never raises for cloud
        trouble; a database failure while recording is logged and the row stays pending (sent again later,
        discarded by the cloud as a repeat)."""
        started = time.monotonic()
        try:
            outcome = await self._attempt(invoice, inline, timeout)
        except StorageError as exc:
            log.error("invoice %s: could not record the delivery outcome: %s", invoice.key, exc)
            outcome = Outcome("error", detail=str(exc))
        finally:
            self._in_flight.discard(invoice.id)
            self._wake.set()
        if self._on_outcome is not None:
            self._on_outcome(outcome, time.monotonic() - started)
        return outcome

    async def _attempt(self, invoice: Invoice, inline: InlineContext | None, timeout: float | None) -> Outcome:
        try:
            answer = await self._cloud.post_invoice(invoice.body, invoice.content_type, invoice.key, timeout=timeout)
        except CloudAuthError as exc:
            self._pause(str(exc))
            await self._outbox.reschedule(invoice.id, time.time() + self._settings.auth_probe_interval,
                                          str(exc), status=exc.status, count_attempt=False)
            self._record("paused")
            return Outcome("paused", detail=str(exc))
        except CloudRejected as exc:
            self._reachable()
            reason = f"the cloud refused the invoice with HTTP {exc.status}: {_excerpt(exc.body)}"
            acked = self._answered_inline(inline)
            await self._outbox.mark_rejected(invoice.id, exc.status, exc.body, exc.content_type, reason,
                                             acked_with_cloud_answer=acked)
            log.warning("invoice %s rejected: %s (see `posbridge queue show %s`)", invoice.key, reason, invoice.id)
            self._record("rejected")
            return Outcome("rejected", CloudAnswer(exc.status, exc.body, exc.content_type), reason)
        except CloudUnavailable as exc:
            return await self._retry_later(invoice, exc)
        self._reachable()
        if self.paused_reason is not None:
            log.info("the cloud accepts the token again; delivery resumes")
            self.paused_reason = None
            self.paused_since = None
        acked = self._answered_inline(inline)
        await self._outbox.mark_sent(invoice.id, answer.status, answer.body, answer.content_type,
                                     acked_with_cloud_answer=acked)
        self._record("sent")
        return Outcome("sent", answer)

    @staticmethod
    def _answered_inline(inline: InlineContext | None) -> bool:
        """The cloud's answer reached the POS, unless the POST handler already gave up and answered 202."""
        if inline is None or inline.gave_up:
            return False
        inline.answered = True
        return True

    async def _retry_later(self, invoice: Invoice, exc: CloudUnavailable) -> Outcome:
        delay = self.backoff(invoice.attempts + 1)
        if exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self._settings.retry_after_cap))
        due = time.time() + delay
        if exc.status is None or exc.status in HOLD_STATUSES:
            if exc.status is None:
                self.cloud_reachable = False
            self._hold_until = max(self._hold_until, due)
        self.last_failure = exc.reason
        await self._outbox.reschedule(invoice.id, due, exc.reason, status=exc.status)
        log.info("invoice %s not delivered (%s); next attempt in %.1f s", invoice.key, exc.reason, delay)
        self._record("retry")
        return Outcome("retry", detail=exc.reason)

    def _reachable(self) -> None:
        if self.cloud_reachable is False:
            log.info("the cloud is reachable again")
        self.cloud_reachable = True
        self.last_failure = None
        self._hold_until = 0.0

    def _pause(self, reason: str) -> None:
        if self.paused_reason is None:
            log.error("delivery paused: %s", reason)
            self.paused_since = time.time()
        self.paused_reason = reason
        self.cloud_reachable = True
        self._next_probe_at = time.time() + self._settings.auth_probe_interval

    def _record(self, result: str) -> None:
        self.last_delivery_at = time.time()
        self.last_delivery_result = result

    # -- the loop --

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; then wait (bounded) for attempts in flight."""
        log.info("delivery started (concurrency %d)", self._settings.concurrency)
        while not stop.is_set():
            try:
                await self._purge_if_due()
                await self._dispatch()
            except StorageError as exc:
                log.error("delivery loop cannot read the outbox: %s", exc)
            except Exception:  # noqa: BLE001 - a bug here must not stop delivery for good
                log.exception("delivery loop error; continuing")
            await self._sleep(stop)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _dispatch(self) -> None:
        now = time.time()
        if self.paused_reason is not None:
            if now < self._next_probe_at or self._in_flight:
                return
            self._next_probe_at = now + self._settings.auth_probe_interval
            slots = 1
        elif now < self._hold_until:
            return
        elif self.cloud_reachable is False:
            slots = 0 if self._in_flight else 1
        else:
            slots = self._settings.concurrency - len(self._tasks)
        if slots <= 0:
            return
        for invoice in await self._outbox.due(slots, exclude=self._in_flight):
            if self.claim(invoice.id):
                task = asyncio.create_task(self.deliver(invoice), name=f"deliver-{invoice.id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _sleep(self, stop: asyncio.Event) -> None:
        timeout = self._settings.poll_interval
        if self.paused_reason is None and len(self._tasks) < self._settings.concurrency:
            due = await self._outbox.next_due_at() if not self._in_flight else None
            if due is not None:
                timeout = min(timeout, max(0.0, due - time.time()))
            if self._hold_until > time.time():
                timeout = max(timeout, min(self._hold_until - time.time(), self._settings.poll_interval))
        self._wake.clear()
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=max(timeout, 0.005), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _purge_if_due(self) -> None:
        if time.monotonic() - self._last_purge < PURGE_EVERY and self._last_purge:
            return
        self._last_purge = time.monotonic()
        purged = await self._outbox.purge_sent(self._settings.retention_days)
        if purged:
            log.info("purged %d sent invoices older than %g days", purged, self._settings.retention_days)


def _excerpt(body: bytes, limit: int = 300) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."
