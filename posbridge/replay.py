"""Background delivery of the outbox to the cloud.

The rules (ARCHITECTURE.md, invoice path):

- due invoices are sent oldest first, at most ``concurrency`` HTTP exchanges at a time, each with its own key as
  ``Idempotency-Key`` on every attempt, forever. An invoice stays claimed (never sent twice by this process)
  until its outcome is recorded, but its delivery slot is free for the next invoice as soon as the cloud has
  answered: the commit of the outcome does not hold up the next exchange. Due invoices are read ``READ_AHEAD``
  at a time, not one query per delivery; one that falls due meanwhile waits for those (at most
  ``READ_AHEAD_AGE`` seconds, after which what was read ahead is read again). A copy read ahead of an invoice
  whose delivery ended meanwhile (an inline one) is forgotten; a change made from another process (``queue
  drop --yes`` of a pending invoice) is seen when what was read ahead is read again;
- 2xx -> ``sent``; 401/403 -> delivery as a whole is *paused* (no invoice is rejected for a bad token) and
  one invoice is tried every ``auth_probe_interval`` until the cloud accepts the token again (the daemon also
  asks the cloud once at start-up: :meth:`Replayer.token_checked`);
  other 4xx -> ``rejected`` with the cloud's answer kept for a person;
  anything transient -> the invoice is due again at ``now + backoff(attempts)`` (full jitter via tenacity's
  ``wait_random_exponential``, capped), or later when the cloud's ``Retry-After`` says so (capped too);
- while the cloud looks down (no answer, 429, 502-504) every invoice waits behind one probe, at a pace that
  backs off with the failures in a row, so a backlog of thousands does not hammer a cloud that is coming back;
- ``Retry-After`` is about the invoice it answered: that invoice waits as long as the cloud asked, the others
  go on. Only when the answers for two different invoices in a row carry one (the cloud means the whole
  account, e.g. 429 on every attempt) does all delivery wait that long;
- *no path out of an attempt is without backoff*: an unexpected exception (a bug, a header nobody foresaw)
  reschedules the invoice like a failed attempt. When the database refuses to record an outcome (disk full,
  read-only file), the outcome and the schedule are kept in memory (an invoice the cloud accepted is never
  sent again by this process), delivery as a whole pauses with the reason in the status, and the outcomes are
  written as soon as the database takes writes again;
- the schedule is in the database: a restart resumes it, and an invoice that was in flight at a crash is
  still ``pending`` and due, so it is sent again (the cloud discards the repeat by its key);
- each invoice's fate is one INFO line (sent, with its key, the masked member and how long it took) or a
  WARNING (rejected); failed attempts are DEBUG lines, with a summary at most once a minute.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from tenacity import wait_random_exponential

from posbridge.cloud import CloudAnswer, CloudClient, CloudProbe
from posbridge.config import DeliverySettings
from posbridge.errors import CloudAuthError, CloudRejected, CloudUnavailable, StorageError
from posbridge.logs import LogThrottle, mask_member
from posbridge.outbox import Invoice, Outbox
from posbridge.unrecorded import UnrecordedOutcomes, Write

log = logging.getLogger(__name__)

#: Statuses that mean "the cloud as a whole is not taking work now", not "this invoice has a problem".
HOLD_STATUSES = frozenset({429, 502, 503, 504})
PURGE_EVERY = 3600.0
#: Invoices answered with ``Retry-After`` in a row (no other answer between) before it applies to everything.
ACCOUNT_WIDE_AFTER = 2
#: Due invoices read by one query (at least two per delivery slot): the query sorts the whole backlog, so it
#: runs once per few dozen deliveries, not once per delivery.
READ_AHEAD = 64
#: Invoices read ahead and not sent within this many seconds are read again (a person may have changed them).
READ_AHEAD_AGE = 2.0
#: Seconds a background delivery's "sent" may wait for others to share its commit (the invoice stays claimed
#: meanwhile; its delivery slot is already free). Inline deliveries, with a till waiting, commit at once.
SENT_LINGER = 0.01


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
    """Owns delivery: the background loop and the inline attempts of the POST handler.

    ``writes_failing`` tells whether the database currently refuses writes (the writer's last error, cleared by
    the next commit); delivery pauses while it does, since no outcome could be recorded.
    """

    def __init__(self, outbox: Outbox, cloud: CloudClient, settings: DeliverySettings,
                 on_outcome: Callable[[Outcome, float], None] | None = None,
                 writes_failing: Callable[[], str | None] | None = None) -> None:
        self._outbox = outbox
        self._cloud = cloud
        self._settings = settings
        self._wait = wait_random_exponential(multiplier=settings.backoff_base, max=settings.backoff_cap)
        self._in_flight: set[int] = set()  # claimed: being sent, or their outcome being recorded
        self._tasks: set[asyncio.Task] = set()
        self._sending = 0  # background deliveries whose HTTP exchange is running: what ``concurrency`` bounds
        self._ready: collections.deque[Invoice] = collections.deque()  # due, read ahead, not claimed yet
        self._ready_at = 0.0  # monotonic time ``_ready`` was read
        self._reading: asyncio.Future[None] | None = None  # a read-ahead running in the background
        self._queries = 0  # read-ahead queries running now
        self._ended_while_reading: set[int] = set()  # deliveries that ended while a read-ahead query ran
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None
        self._hold_until = 0.0
        self._on_outcome = on_outcome
        self._writes_failing = writes_failing or (lambda: None)
        self.paused_reason: str | None = None
        self.paused_since: float | None = None
        self.last_delivery_at: float | None = None
        self.last_delivery_result: str | None = None
        self._next_probe_at = 0.0
        self._last_purge = 0.0
        self._cloud_failures = 0  # cloud-wide failures in a row: the pace of the probes while it is down
        self._errors = 0  # unexpected exceptions in a row
        self._retry_after_streak: set[int] = set()
        self.account_hold_reason: str | None = None
        self._unrecorded = UnrecordedOutcomes()  # what the database could not take yet
        self._quiet = LogThrottle(60.0)

    @property
    def cloud_reachable(self) -> bool | None:
        """The cloud client's record (:class:`~posbridge.cloud.CloudHealth`), shared with member look-ups."""
        return self._cloud.health.reachable

    # -- the schedule --

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: uniform in [0, min(cap, base * 2**(attempts-1))]."""
        return float(self._wait(_Attempt(max(1, attempts))))

    def delivery_allowed_inline(self) -> bool:
        """Whether a POST should try the cloud before answering: not while paused, on hold, or while the
        last attempt found the cloud unreachable (the replayer keeps probing; the till does not wait)."""
        # not the writer's last error: the enqueue before the attempt commits, or nothing is attempted
        return (self.paused_reason is None and self._unrecorded.problem is None
                and self.cloud_reachable is not False and time.time() >= self._hold_until)

    def claim(self, invoice_id: int) -> bool:
        """Reserve an invoice for one delivery; False if someone is delivering it already, or if its outcome
        is known but not yet written (the database refused it)."""
        if invoice_id in self._in_flight or invoice_id in self._unrecorded:
            return False
        self._in_flight.add(invoice_id)
        return True

    def wake(self) -> None:
        """Let the delivery loop look again now (something changed: a slot, a claim, a new invoice)."""
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def invoice_queued(self) -> None:
        """A new invoice is due now: wake the loop, unless it could not send it now anyway (paused, on hold,
        or the one probe of an unreachable cloud is out), so a busy till does not spin an idle loop."""
        if (self._pause_reason() is not None or time.time() < self._hold_until
                or (self.cloud_reachable is False and self._in_flight)):
            return
        self.wake()

    def _pause_reason(self) -> str | None:
        if self._unrecorded.problem is not None:
            return self._unrecorded.problem
        failing = self._writes_failing()
        if failing is not None:
            return f"the database cannot record delivery outcomes: {failing}"
        return self.paused_reason

    def status(self) -> dict[str, Any]:
        reason = self._pause_reason()
        cause = None if reason is None else "token" if reason == self.paused_reason else "database"
        since = self.paused_since if cause == "token" else self._unrecorded.since
        return {
            "cloud_reachable": self.cloud_reachable,
            "last_failure": self._cloud.health.last_failure,
            "paused": reason is not None,
            "paused_reason": reason,
            "paused_cause": cause,
            "paused_since": since if reason is not None else None,
            "hold_until": self._hold_until if self._hold_until > time.time() else None,
            "hold_reason": self.account_hold_reason if self._hold_until > time.time() else None,
            "unrecorded_outcomes": len(self._unrecorded),
            "last_delivery_at": self.last_delivery_at,
            "last_delivery_result": self.last_delivery_result,
            "in_flight": len(self._in_flight),
        }

    def token_checked(self, probe: CloudProbe) -> None:
        """The start-up token check (:meth:`CloudClient.probe`): log it; a refused token pauses delivery at
        once; an accepted one lets every invoice go now."""
        if probe.outcome == "ok":
            log.info("cloud token check at start-up: %s; delivering what is due", probe.detail)
        elif probe.outcome == "refused":
            log.error("cloud token check at start-up: %s", probe.detail)
            self._pause(f"{probe.detail}; check it with `posbridge token check`")
        else:
            log.warning("cloud token check at start-up: %s; delivery starts anyway", probe.detail)

    # -- one delivery --

    async def deliver(self, invoice: Invoice, *, inline: InlineContext | None = None,
                      timeout: float | None = None) -> Outcome:
        """Send one claimed invoice and record the outcome; releases the claim. Never raises (except when
        cancelled): whatever goes wrong ends in a recorded or remembered next attempt."""
        return await self._deliver(invoice, inline, timeout, _Slot(None))

    async def _deliver(self, invoice: Invoice, inline: InlineContext | None, timeout: float | None,
                       slot: "_Slot") -> Outcome:
        started = time.monotonic()
        outcome: Outcome | None = None
        try:
            outcome = await self._attempt(invoice, inline, timeout, slot)
            self._errors = 0
        except Exception as exc:  # noqa: BLE001 - a bug must back off like any failure, never loop
            outcome = await self._after_error(invoice, exc)
        finally:
            slot.release()  # wakes the loop if the exchange did not already
            self._in_flight.discard(invoice.id)
            self._forget_read_ahead(invoice.id)
            if (outcome is None or outcome.result not in ("sent", "rejected")
                    or self.paused_reason is not None or self.cloud_reachable is False):
                self.wake()  # the loop may go on now: a new schedule, or the one probe is over
        if self._on_outcome is not None:
            self._on_outcome(outcome, time.monotonic() - started)
        return outcome

    async def _attempt(self, invoice: Invoice, inline: InlineContext | None, timeout: float | None,
                       slot: "_Slot") -> Outcome:
        try:
            try:
                answer = await self._cloud.post_invoice(invoice.body, invoice.content_type, invoice.key,
                                                        timeout=timeout)
            finally:
                slot.release()  # the exchange is over: the next invoice may go while this outcome is recorded
        except CloudAuthError as exc:
            self._pause(str(exc))
            # the pause (in memory) spaces the attempts; the row keeps its due time, so a restart with a
            # working token delivers it at once
            await self._write(invoice.id, functools.partial(
                self._outbox.reschedule, invoice.id, invoice.next_attempt_at, str(exc), status=exc.status,
                count_attempt=False), not_before=time.time() + self._settings.auth_probe_interval)
            self._record("paused")
            return Outcome("paused", detail=str(exc))
        except CloudRejected as exc:
            self._answered()
            reason = f"the cloud refused the invoice with HTTP {exc.status}: {_excerpt(exc.body)}"
            acked = self._answered_inline(inline)
            await self._write(invoice.id, functools.partial(
                self._outbox.mark_rejected, invoice.id, exc.status, exc.body, exc.content_type, reason,
                acked_with_cloud_answer=acked))
            log.warning("invoice %s (member %s) rejected after %s: %s (see `posbridge queue show %s`)",
                        invoice.key, mask_member(invoice.member_id), _attempts(invoice.attempts + 1), reason,
                        invoice.id)
            self._record("rejected")
            return Outcome("rejected", CloudAnswer(exc.status, exc.body, exc.content_type), reason)
        except CloudUnavailable as exc:
            return await self._retry_later(invoice, exc)
        self._answered()
        if self.paused_reason is not None:
            log.info("the cloud accepts the token again; delivery resumes")
            self.paused_reason = None
            self.paused_since = None
        acked = self._answered_inline(inline)
        await self._write(invoice.id, functools.partial(
            self._outbox.mark_sent, invoice.id, answer.status, answer.body, answer.content_type,
            acked_with_cloud_answer=acked, linger=0.0 if inline is not None else SENT_LINGER))
        if log.isEnabledFor(logging.INFO):  # the arguments cost more than the check
            log.info("invoice %s (member %s) sent: received %s, delivered %s later, %s, cloud answered HTTP %d",
                     invoice.key, mask_member(invoice.member_id), _clock(invoice.received_at),
                     _duration(time.time() - invoice.received_at), _attempts(invoice.attempts + 1), answer.status)
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
        now = time.time()
        delay = self.backoff(invoice.attempts + 1)
        hint = None if exc.retry_after is None else min(exc.retry_after, self._settings.retry_after_cap)
        if hint is not None:
            delay = max(delay, hint)
            self._retry_after_streak.add(invoice.id)
        else:
            self._retry_after_streak.clear()
        if exc.status is None or exc.status in HOLD_STATUSES:
            self._cloud_failures += 1
            hold = self.backoff(self._cloud_failures)
            if hint is not None and len(self._retry_after_streak) >= ACCOUNT_WIDE_AFTER:
                if hint > hold and self.account_hold_reason is None:
                    log.warning("the cloud asks the whole account to wait: Retry-After on %d invoices in a row "
                                "(HTTP %s); no delivery for %s", len(self._retry_after_streak), exc.status,
                                _duration(hint))
                self.account_hold_reason = (f"the cloud asked for a pause (HTTP {exc.status} with Retry-After on "
                                            f"{len(self._retry_after_streak)} invoices in a row)")
                hold = max(hold, hint)
            self._hold_until = max(self._hold_until, now + hold)
        due = now + delay
        await self._write(invoice.id, functools.partial(self._outbox.reschedule, invoice.id, due, exc.reason,
                                                        status=exc.status), not_before=due)
        log.debug("invoice %s not delivered (%s); next attempt in %.1f s", invoice.key, exc.reason, delay)
        self._quiet.log(log, logging.WARNING, "invoices are not being delivered: %s; retrying with backoff "
                        "(latest: %s, next attempt in %s)", exc.reason, invoice.key, _duration(delay),
                        key=("retry", exc.reason))
        self._record("retry")
        return Outcome("retry", detail=exc.reason)

    async def _after_error(self, invoice: Invoice, exc: Exception) -> Outcome:
        """An attempt ended in an exception nobody planned for: the invoice waits like after any failure, and
        all delivery slows down while it keeps happening."""
        self._errors += 1
        self._hold_until = max(self._hold_until, time.time() + self.backoff(self._errors))
        delay = self.backoff(invoice.attempts + 1)
        due = time.time() + delay
        reason = f"internal error during delivery ({type(exc).__name__}: {exc})"
        self._quiet.log(log, logging.ERROR, "invoice %s: %s; next attempt in %s", invoice.key, reason,
                        _duration(delay), key=("error", type(exc).__name__), exc_info=exc)
        try:
            await self._write(invoice.id, functools.partial(self._outbox.reschedule, invoice.id, due, reason[:500]),
                              not_before=due)
        except Exception:  # noqa: BLE001 - then memory alone holds the schedule
            self._unrecorded.hold(invoice.id, due)
        self._record("error")
        return Outcome("error", detail=reason)

    async def _write(self, invoice_id: int, write: Write, *, not_before: float | None = None) -> None:
        """Record an outcome; if the database refuses, memory keeps it and delivery pauses (see
        :mod:`posbridge.unrecorded`). ``write`` may run later, so it carries its values (a ``partial``, never a
        lambda over an ``except`` block's name, which Python unbinds when the block ends)."""
        await self._unrecorded.record(invoice_id, write, not_before=not_before)

    def _answered(self) -> None:
        """The cloud gave an answer about the invoice itself (accepted or refused): it is taking work."""
        self._cloud_failures = 0
        self._retry_after_streak.clear()
        self.account_hold_reason = None
        self._hold_until = 0.0

    def _pause(self, reason: str) -> None:
        if self.paused_reason is None:
            log.error("delivery paused: %s", reason)
            self.paused_since = time.time()
        self.paused_reason = reason
        self._next_probe_at = time.time() + self._settings.auth_probe_interval

    def _record(self, result: str) -> None:
        self.last_delivery_at = time.time()
        self.last_delivery_result = result

    # -- the loop --

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; then wait (bounded) for attempts in flight."""
        log.info("delivery started (concurrency %d)", self._settings.concurrency)
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: self.wake())
        try:
            while not stop.is_set():
                self._woken = False  # a wake from here on is not lost: _sleep returns at once
                try:
                    await self._purge_if_due()
                    await self._dispatch()
                except StorageError as exc:
                    self._quiet.log(log, logging.ERROR, "delivery loop cannot read the outbox: %s", exc)
                except Exception:  # noqa: BLE001 - a bug here must not stop delivery for good
                    self._quiet.log(log, logging.ERROR, "delivery loop error; continuing", exc_info=True)
                await self._sleep(stop)
        finally:
            stopping.cancel()
            if self._reading is not None:
                self._reading.cancel()
        self._ready.clear()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._unrecorded:
            await self._unrecorded.write_all()
            if self._unrecorded:
                log.error("stopping with %d delivery outcomes the database would not take: those invoices "
                          "are sent again after the restart (the cloud discards the repeats by their key)",
                          len(self._unrecorded))

    async def _dispatch(self) -> None:
        if self._unrecorded.retry_due(writes_work=self._writes_failing() is None):
            await self._unrecorded.write_all()
        if self._unrecorded.problem is not None or self._writes_failing() is not None:
            self._ready.clear()
            return
        now = time.time()
        if self.paused_reason is not None:
            self._ready.clear()
            if now < self._next_probe_at or self._in_flight:
                return
            self._next_probe_at = now + self._settings.auth_probe_interval
            invoices = await self._read_due(1)
        elif now < self._hold_until:
            self._ready.clear()
            return
        elif self.cloud_reachable is False:
            self._ready.clear()  # one probe at a time, read fresh
            if self._in_flight:
                return
            invoices = await self._read_due(1)
        else:
            slots = self._settings.concurrency - self._sending
            if slots <= 0:
                return
            invoices = await self._take_due(slots)
        for invoice in invoices:
            if self.claim(invoice.id):
                slot = _Slot(self)
                task = asyncio.create_task(self._deliver(invoice, None, None, slot), name=f"deliver-{invoice.id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _read_due(self, limit: int) -> list[Invoice]:
        return await self._outbox.due(limit, exclude=self._in_flight | self._unrecorded.skipped())

    async def _take_due(self, slots: int) -> list[Invoice]:
        """Up to ``slots`` due invoices, oldest first, from the rows read ahead; one query reads enough for a
        few rounds of deliveries (it sorts the whole backlog, so not once per invoice)."""
        ready = self._ready
        if ready and time.monotonic() - self._ready_at > READ_AHEAD_AGE:
            ready.clear()
        if len(ready) < slots:
            await self._read_ahead()
        taken: list[Invoice] = []
        while ready and len(taken) < slots:
            taken.append(ready.popleft())
        if len(ready) < self._settings.concurrency:  # read the next ones while these are being sent
            self._read_ahead_soon()
        return taken

    async def _read_ahead(self) -> None:
        if self._reading is not None:  # already on its way
            await asyncio.shield(self._reading)
        else:
            await self._query_ahead()

    async def _query_ahead(self) -> None:
        ready = self._ready
        ahead = {invoice.id for invoice in ready}
        self._queries += 1
        try:
            fresh = await self._outbox.due(max(READ_AHEAD, 2 * self._settings.concurrency),
                                           exclude=self._in_flight | self._unrecorded.skipped() | ahead)
            # what changed while the query ran: read ahead meanwhile, claimed, or delivered already
            known = {invoice.id for invoice in ready} | self._in_flight | self._ended_while_reading
        finally:
            self._queries -= 1
            if not self._queries:
                self._ended_while_reading.clear()
        if not ready:
            self._ready_at = time.monotonic()
        ready.extend(invoice for invoice in fresh if invoice.id not in known)

    def _forget_read_ahead(self, invoice_id: int) -> None:
        """A delivery of this invoice has ended (an inline one, say): a copy read ahead before is out of date and
        must not be sent again."""
        if self._queries:
            self._ended_while_reading.add(invoice_id)
        for invoice in self._ready:
            if invoice.id == invoice_id:
                self._ready.remove(invoice)
                break

    def _read_ahead_soon(self) -> None:
        if self._reading is not None:
            return

        async def read() -> None:
            try:
                await self._query_ahead()
            except StorageError:
                pass  # the next dispatch reads again, and says so if it fails too
            finally:
                self._reading = None
                self.wake()

        self._reading = asyncio.ensure_future(read())

    async def _sleep(self, stop: asyncio.Event) -> None:
        if self._woken or stop.is_set():
            return
        timeout = self._settings.poll_interval
        if self._pause_reason() is None and self._sending < self._settings.concurrency:
            due = await self._outbox.next_due_at() if not self._in_flight else None
            if due is not None:
                timeout = min(timeout, max(0.0, due - time.time()))
            if self._hold_until > time.time():
                timeout = max(timeout, min(self._hold_until - time.time(), self._settings.poll_interval))
        elif self._unrecorded:
            timeout = min(timeout, self._unrecorded.seconds_to_retry())
        if self._woken or stop.is_set():
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(max(timeout, 0.005), _release, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def _purge_if_due(self) -> None:
        if time.monotonic() - self._last_purge < PURGE_EVERY and self._last_purge:
            return
        self._last_purge = time.monotonic()
        try:
            purged = await self._outbox.purge_sent(self._settings.retention_days)
        except StorageError as exc:
            self._last_purge = time.monotonic() - PURGE_EVERY + 60  # again in a minute
            self._quiet.log(log, logging.ERROR, "could not purge old sent invoices: %s", exc)
            return
        if purged:
            log.info("purged %d sent invoices older than %g days", purged, self._settings.retention_days)


class _Slot:
    """One of the ``concurrency`` delivery slots, held from dispatch until the cloud answered (or the attempt
    ended otherwise); released once. ``_Slot(None)`` is no slot (inline deliveries are not counted)."""

    __slots__ = ("_replayer",)

    def __init__(self, replayer: Replayer | None) -> None:
        self._replayer = replayer
        if replayer is not None:
            replayer._sending += 1

    def release(self) -> None:
        replayer, self._replayer = self._replayer, None
        if replayer is not None:
            replayer._sending -= 1
            replayer.wake()


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _excerpt(body: bytes, limit: int = 300) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _attempts(count: int) -> str:
    return f"{count} attempt{'' if count == 1 else 's'}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _clock(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
