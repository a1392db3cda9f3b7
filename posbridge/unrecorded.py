"""Delivery outcomes the database would not take yet, and the schedule only memory holds meanwhile.

When recording an attempt's outcome fails (disk full, read-only file), the replayer must neither forget the
outcome nor try the invoice again at once: an invoice the cloud accepted must not be sent again, and one that
failed must still wait its backoff. :class:`UnrecordedOutcomes` keeps, per invoice, the write still to be made
and the time before which the invoice must not be picked up (for ever, for a final outcome), and says when to
try the writes again (backing off, at most every ``RETRY_CAP`` seconds).

What callers may rely on: :meth:`record` never raises :class:`~posbridge.errors.StorageError`; while
``problem`` is set some outcome is only in memory (the replayer pauses delivery); :meth:`write_all` writes
them oldest first and clears ``problem`` only when every one is in. Lost at a crash: those invoices are still
``pending`` in the database and are sent again after the restart (the cloud discards repeats by their key).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Awaitable, Callable

from posbridge.errors import StorageError

log = logging.getLogger("posbridge.replay")

#: Longest wait between attempts to write outcomes the database refused.
RETRY_CAP = 10.0

Write = Callable[[], Awaitable[None]]


class UnrecordedOutcomes:
    """See the module docstring."""

    def __init__(self) -> None:
        self._writes: dict[int, Write] = {}
        self._not_before: dict[int, float] = {}  # invoice id -> epoch seconds
        self.problem: str | None = None
        self.since: float | None = None
        self._failures = 0
        self._retry_at = 0.0  # monotonic

    def __len__(self) -> int:
        return len(self._writes)

    def __contains__(self, invoice_id: object) -> bool:
        return invoice_id in self._writes

    async def record(self, invoice_id: int, write: Write, *, not_before: float | None = None) -> None:
        """Make ``write``; if the database refuses, keep it, and keep the invoice off the road until
        ``not_before`` (None: a final outcome, until it is written)."""
        try:
            await write()
        except StorageError as exc:
            self._not_before[invoice_id] = math.inf if not_before is None else not_before
            self._writes[invoice_id] = write
            self._failed(exc)
            return
        self._not_before.pop(invoice_id, None)
        self._writes.pop(invoice_id, None)

    def hold(self, invoice_id: int, not_before: float) -> None:
        """Keep an invoice off the road until ``not_before`` without a write (the write itself failed
        unexpectedly)."""
        self._not_before[invoice_id] = not_before

    def skipped(self) -> set[int]:
        """Invoices whose schedule only memory holds and that are not due yet."""
        now = time.time()
        for invoice_id in [i for i, at in self._not_before.items() if at <= now and i not in self._writes]:
            del self._not_before[invoice_id]
        return {i for i, at in self._not_before.items() if at > now}

    def retry_due(self, writes_work: bool) -> bool:
        """Whether to try the writes now: their backoff has passed, or the database just took a write."""
        return bool(self._writes) and (writes_work or time.monotonic() >= self._retry_at)

    def seconds_to_retry(self) -> float:
        return max(0.0, self._retry_at - time.monotonic())

    async def write_all(self) -> None:
        """Write what is kept, oldest first; stop at the first refusal (and back off)."""
        for invoice_id, write in list(self._writes.items()):
            try:
                await write()
            except StorageError as exc:
                self._failed(exc)
                return
            self._writes.pop(invoice_id, None)
            self._not_before.pop(invoice_id, None)
        if self.problem is not None:
            log.warning("the database records delivery outcomes again (they failed for %.0f s); delivery "
                        "resumes", time.time() - (self.since or time.time()))
        self.problem = None
        self.since = None
        self._failures = 0

    def _failed(self, exc: StorageError) -> None:
        if self.problem is None:
            log.error("delivery paused: the database cannot record delivery outcomes (%s); %d kept in memory "
                      "and written when it can again", exc, len(self._writes))
            self.since = time.time()
        self.problem = f"the database cannot record delivery outcomes: {exc}"
        self._failures += 1
        self._retry_at = time.monotonic() + min(RETRY_CAP, 0.25 * 2 ** self._failures)
