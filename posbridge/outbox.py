"""The durable invoice queue.

What callers may rely on:

- :meth:`Outbox.enqueue` returns only after the invoice's bytes are committed (WAL, ``synchronous=FULL``).
  If the commit fails it raises :class:`StorageError` and nothing may be acknowledged.
- Each row has an *identity* (which sale it is, :func:`posbridge.invoice.invoice_identity`) and a *key* (what
  it is delivered under as ``Idempotency-Key``; the identity itself for the first row of a sale).
- The same sale posted again (same identity, same canonical JSON) stores nothing and returns the first row.
  The same identity with different content is never swallowed and never merged: it is stored as a row of its
  own in state ``held`` under a derived key, not delivered until a person releases it (or drops it).
- The bytes and the Content-Type are stored exactly as received and are what delivery sends.
- A row ends ``sent`` or ``rejected`` (or is dropped by a person); nothing else is deleted except sent rows
  older than the retention.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

from posbridge.config import InvoiceSettings
from posbridge.db import Reader, Writer, now
from posbridge.errors import InputError
from posbridge.invoice import content_digest, display_fields, invoice_identity, parse_invoice

PENDING, SENT, REJECTED, HELD = "pending", "sent", "rejected", "held"
STATES = (PENDING, SENT, REJECTED, HELD)
NEEDS_A_PERSON = (REJECTED, HELD)
"""States a person must act on: ``queue retry``/``release``/``drop``, or the counter screen's buttons."""

Received = Literal["stored", "duplicate", "conflict"]


@dataclass(frozen=True)
class Invoice:
    """One stored invoice, as the database holds it."""

    id: int
    key: str
    body: bytes
    content_type: str
    body_sha256: str
    member_id: str | None
    amount: float | None
    state: str
    received_at: float
    attempts: int
    next_attempt_at: float
    last_attempt_at: float | None
    last_error: str | None
    cloud_status: int | None
    cloud_body: bytes | None
    cloud_content_type: str | None
    sent_at: float | None
    acked_with_cloud_answer: bool
    identity: str | None = None
    content_sha256: str | None = None
    conflict_of: int | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Invoice":
        data = dict(zip(row.keys(), row))  # not dict(row): that looks each name up again, one by one
        data["acked_with_cloud_answer"] = bool(data["acked_with_cloud_answer"])
        return cls(**data)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly view without the body (for `queue list` and the status page)."""
        return {
            "id": self.id,
            "key": self.key,
            "state": self.state,
            "member_id": self.member_id,
            "amount": self.amount,
            "received_at": self.received_at,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at if self.state == PENDING else None,
            "last_error": self.last_error,
            "cloud_status": self.cloud_status,
            "sent_at": self.sent_at,
            "conflict_of": self.conflict_of,
        }


@dataclass(frozen=True)
class Enqueued:
    """What :meth:`Outbox.enqueue` did: ``stored`` a new sale, found a ``duplicate`` (``invoice`` is the row
    first stored with this content), or stored a ``conflict`` (``invoice`` is the new held row, ``original``
    the row it shares its identity with)."""

    invoice: Invoice
    result: Received
    original: Invoice | None = None


_COLUMNS = ("key, state, conflict_of, body, content_type, body_sha256, member_id, amount, received_at,"
            " next_attempt_at, identity, content_sha256, attempts")
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)"
_INSERT = f"INSERT INTO invoices ({_COLUMNS}) VALUES {_ROW} RETURNING *"
#: Inserts the row only when no row has this identity (or this identity as its key).
_INSERT_UNLESS_KNOWN = (f"INSERT INTO invoices ({_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0"
                        " WHERE NOT EXISTS (SELECT 1 FROM invoices WHERE identity = ? OR key = ?)")
_ANY_KNOWN = ("SELECT 1 FROM invoices WHERE identity IN (SELECT value FROM json_each(?))"
              " OR key IN (SELECT value FROM json_each(?)) LIMIT 1")

_TYPED_KEY_SAFE = "-_.~:/+=@!$&'()*,;"  # how a key a person types is looked up percent-encoded ("T1 9" -> "T1%209")


# --- the queue --------------------------------------------------------------------------------------------


class Outbox:
    """Invoices waiting for, or done with, delivery. Writes go through the one :class:`Writer`."""

    def __init__(self, writer: Writer, reader: Reader, settings: InvoiceSettings) -> None:
        self._writer = writer
        self._reader = reader
        self._settings = settings
        self._sent_batch: _SentBatch | None = None  # sent outcomes lingering for company (see mark_sent)
        self._flushes: set[asyncio.Future[None]] = set()

    async def enqueue(self, body: bytes, content_type: str, document: dict[str, Any],
                      *, not_before: float | None = None) -> Enqueued:
        """Store an invoice unless this exact sale is known; see the module docstring for the three outcomes.

        ``document`` is the already-parsed body (parsed strictly once by the caller, which had to validate it).
        ``not_before`` delays the first replay attempt (the caller is delivering it inline meanwhile).
        """
        identity = invoice_identity(document, self._settings)
        digest = content_digest(document)
        member_id, amount = display_fields(document, self._settings)
        received = now()
        store = _Store(identity, digest, body, content_type, hashlib.sha256(body).hexdigest(), member_id, amount,
                       received, not_before if not_before is not None else received)
        return await self._writer.submit(store)

    def fill_identities(self) -> int:
        """Give rows stored before identities existed (posbridge 0.1) their identity and content hash, from
        their own stored body, so a re-post of an old sale is recognised. Blocking; returns how many rows."""

        def job(conn: sqlite3.Connection) -> int:
            rows = conn.execute("SELECT id, key, body FROM invoices WHERE identity IS NULL").fetchall()
            for row in rows:
                try:
                    document = parse_invoice(row["body"])
                    identity, digest = invoice_identity(document, self._settings), content_digest(document)
                except (InputError, ValueError):  # stored by a laxer version: it can only match itself
                    identity, digest = row["key"], "body:" + hashlib.sha256(row["body"]).hexdigest()
                conn.execute("UPDATE invoices SET identity = ?, content_sha256 = ? WHERE id = ?",
                             (identity, digest, row["id"]))
            return len(rows)

        return self._writer.call(job)

    # -- outcomes (each one write, batched with whatever else is waiting) --

    async def mark_sent(self, invoice_id: int, status: int, body: bytes, content_type: str | None,
                        *, acked_with_cloud_answer: bool = False, linger: float = 0.0) -> None:
        """Record a delivery the cloud accepted; returns after COMMIT (raises StorageError if it failed).

        ``linger`` (seconds) lets this write wait that long for others to share its commit: a drained backlog
        then costs one commit per few dozen invoices instead of one each. The caller must hold the invoice
        (claimed) meanwhile; 0 (what an inline delivery, with a till waiting, uses) commits at once."""
        at = now()
        row = (SENT, at, at, status, body, content_type, int(acked_with_cloud_answer), invoice_id, PENDING)
        if linger <= 0:
            await self._writer.submit(lambda conn: _mark_sent(conn, [row]))
            return
        batch = self._sent_batch
        if batch is None or len(batch.rows) >= SENT_BATCH_MAX:
            loop = asyncio.get_running_loop()
            batch = self._sent_batch = _SentBatch(loop.create_future())
            loop.call_later(linger, self._flush_sent, batch)
        batch.rows.append(row)
        if len(batch.rows) >= SENT_BATCH_MAX:
            self._flush_sent(batch)
        await asyncio.shield(batch.committed)  # one caller cancelled (a shutdown) does not cancel the rest

    def _flush_sent(self, batch: "_SentBatch") -> None:
        if batch.flushing:
            return
        batch.flushing = True
        if self._sent_batch is batch:
            self._sent_batch = None
        rows = batch.rows

        async def flush() -> None:
            try:
                await self._writer.submit(lambda conn: _mark_sent(conn, rows))
            except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets the failure
                batch.committed.set_exception(exc)
                batch.committed.exception()  # retrieved: no "never retrieved" warning if all waiters left
            else:
                batch.committed.set_result(None)

        self._flushes.add(task := asyncio.ensure_future(flush()))
        task.add_done_callback(self._flushes.discard)

    async def mark_rejected(self, invoice_id: int, status: int, body: bytes, content_type: str | None,
                            reason: str, *, acked_with_cloud_answer: bool = False) -> None:
        at = now()

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE invoices SET state = ?, last_attempt_at = ?, attempts = attempts + 1, cloud_status = ?,"
                " cloud_body = ?, cloud_content_type = ?, last_error = ?, acked_with_cloud_answer = ?"
                " WHERE id = ? AND state = ?",
                (REJECTED, at, status, body, content_type, reason, int(acked_with_cloud_answer), invoice_id,
                 PENDING),
            )

        await self._writer.submit(job)

    async def reschedule(self, invoice_id: int, next_attempt_at: float, error: str,
                         *, status: int | None = None, count_attempt: bool = True) -> None:
        """Leave the row pending, due again at ``next_attempt_at``; ``error`` says why for people."""
        at = now()

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE invoices SET next_attempt_at = ?, last_attempt_at = ?, attempts = attempts + ?,"
                " last_error = ?, cloud_status = COALESCE(?, cloud_status) WHERE id = ? AND state = ?",
                (next_attempt_at, at, 1 if count_attempt else 0, error, status, invoice_id, PENDING),
            )

        await self._writer.submit(job)

    # -- for people (CLI) --

    def retry(self, invoice_id: int) -> Invoice | None:
        """Put a rejected (or pending) invoice back in line, due now. Blocking; for the CLI and the counter
        screen. A held invoice is not retried (see :meth:`release`); the row is returned unchanged."""

        def job(conn: sqlite3.Connection) -> Invoice | None:
            conn.execute(
                "UPDATE invoices SET state = ?, next_attempt_at = ?, last_error = NULL"
                " WHERE id = ? AND state IN (?, ?)",
                (PENDING, now(), invoice_id, PENDING, REJECTED),
            )
            row = conn.execute("SELECT * FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
            return Invoice.from_row(row) if row else None

        return self._writer.call(job)

    def release(self, invoice_id: int) -> Invoice | None:
        """A person decided a held invoice is a sale of its own: deliver it, under its derived key, due now.
        Blocking. Rows in other states are returned unchanged."""

        def job(conn: sqlite3.Connection) -> Invoice | None:
            conn.execute("UPDATE invoices SET state = ?, next_attempt_at = ?, last_error = NULL"
                         " WHERE id = ? AND state = ?", (PENDING, now(), invoice_id, HELD))
            row = conn.execute("SELECT * FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
            return Invoice.from_row(row) if row else None

        return self._writer.call(job)

    def drop(self, invoice_id: int) -> Invoice | None:
        """Delete one invoice for good (a person decided). Returns what was deleted."""

        def job(conn: sqlite3.Connection) -> Invoice | None:
            row = conn.execute("SELECT * FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM invoices WHERE id = ?", (invoice_id,))
            return Invoice.from_row(row)

        return self._writer.call(job)

    async def purge_sent(self, retention_days: float) -> int:
        """Delete sent invoices older than the retention; returns how many."""
        cutoff = now() - retention_days * 86400

        def job(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM invoices WHERE state = ? AND sent_at < ?", (SENT, cutoff)).rowcount

        return await self._writer.submit(job)

    # -- reads --

    async def due(self, limit: int, exclude: Iterable[int] = ()) -> list[Invoice]:
        """Pending invoices whose next attempt is due, oldest first, skipping ``exclude`` (in flight)."""
        excluded = set(exclude)
        at = now()

        def job(conn: sqlite3.Connection) -> list[Invoice]:
            rows = conn.execute(
                "SELECT * FROM invoices WHERE state = ? AND next_attempt_at <= ? ORDER BY id LIMIT ?",
                (PENDING, at, limit + len(excluded)),
            ).fetchall()
            return [Invoice.from_row(r) for r in rows if r["id"] not in excluded][:limit]

        return await self._reader.run(job)

    async def next_due_at(self) -> float | None:
        def job(conn: sqlite3.Connection) -> float | None:
            return conn.execute(
                "SELECT MIN(next_attempt_at) FROM invoices WHERE state = ?", (PENDING,)
            ).fetchone()[0]

        return await self._reader.run(job)

    async def oldest_pending(self, limit: int = 1) -> list[Invoice]:
        def job(conn: sqlite3.Connection) -> list[Invoice]:
            rows = conn.execute(
                "SELECT * FROM invoices WHERE state = ? ORDER BY id LIMIT ?", (PENDING, limit)
            ).fetchall()
            return [Invoice.from_row(r) for r in rows]

        return await self._reader.run(job)

    def get(self, invoice_id: int) -> Invoice | None:
        row = self._reader.query(lambda c: c.execute("SELECT * FROM invoices WHERE id = ?", (invoice_id,)).fetchone())
        return Invoice.from_row(row) if row else None

    def find(self, key_or_id: str) -> Invoice | None:
        """By numeric id or by invoice key; None for anything that names no invoice (never an exception)."""
        if key_or_id.isascii() and key_or_id.isdigit() and len(key_or_id) <= 18:  # fits SQLite's 64-bit INTEGER
            found = self.get(int(key_or_id))
            if found:
                return found
        if not key_or_id.isprintable() or len(key_or_id) > 1024:
            return None  # keys are printable text of bounded length; this came from a terminal's garbage
        try:
            key_or_id.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes on the command line (lone surrogates)
            return None
        # "T1 1042" as a person types it is stored as "T1%201042"
        keys = (key_or_id, urllib.parse.quote(key_or_id, safe=_TYPED_KEY_SAFE))
        row = self._reader.query(lambda c: c.execute("SELECT * FROM invoices WHERE key IN (?, ?) LIMIT 1",
                                                     keys).fetchone())
        return Invoice.from_row(row) if row else None

    def list(self, state: str | None = None, limit: int = 100) -> list[Invoice]:
        def job(conn: sqlite3.Connection) -> list[Invoice]:
            if state:
                rows = conn.execute("SELECT * FROM invoices WHERE state = ? ORDER BY id LIMIT ?", (state, limit))
            else:
                rows = conn.execute("SELECT * FROM invoices ORDER BY id LIMIT ?", (limit,))
            return [Invoice.from_row(r) for r in rows.fetchall()]

        return self._reader.query(job)

    def stats(self) -> dict[str, Any]:
        """Depth per state and the age of the oldest pending invoice (seconds, None when empty)."""

        def job(conn: sqlite3.Connection) -> dict[str, Any]:
            counts = {state: 0 for state in STATES}
            for row in conn.execute("SELECT state, COUNT(*) AS n FROM invoices GROUP BY state"):
                counts[row["state"]] = row["n"]
            oldest = conn.execute(
                "SELECT MIN(received_at) FROM invoices WHERE state = ?", (PENDING,)
            ).fetchone()[0]
            return {
                "depth": counts,
                "oldest_pending_age_seconds": round(now() - oldest, 3) if oldest is not None else None,
            }

        return self._reader.query(job)


class _Store:
    """The write job of one :meth:`Outbox.enqueue` (the rules are in the module docstring).

    Alone, a job is one ``INSERT ... WHERE NOT EXISTS``; only a known identity costs more statements. Jobs
    waiting together for the writer are stored by :meth:`together` in a few statements for all of them (every
    SQLite call releases the GIL and must win it back from a busy event loop: README, Benchmarks)."""

    __slots__ = ("identity", "digest", "body", "content_type", "body_sha256", "member_id", "amount", "received",
                 "due")

    def __init__(self, identity: str, digest: str, body: bytes, content_type: str, body_sha256: str,
                 member_id: str | None, amount: float | None, received: float, due: float) -> None:
        self.identity, self.digest, self.body, self.content_type = identity, digest, body, content_type
        self.body_sha256, self.member_id, self.amount, self.received, self.due = (
            body_sha256, member_id, amount, received, due)

    def _values(self, key: str, state: str, conflict_of: int | None) -> tuple[Any, ...]:
        return (key, state, conflict_of, self.body, self.content_type, self.body_sha256, self.member_id,
                self.amount, self.received, self.due, self.identity, self.digest)

    def _stored(self, invoice_id: int) -> Enqueued:
        """The row just inserted under the identity, as the database now holds it."""
        return Enqueued(Invoice(
            id=invoice_id, key=self.identity, body=self.body, content_type=self.content_type,
            body_sha256=self.body_sha256, member_id=self.member_id, amount=self.amount, state=PENDING,
            received_at=self.received, attempts=0, next_attempt_at=self.due, last_attempt_at=None, last_error=None,
            cloud_status=None, cloud_body=None, cloud_content_type=None, sent_at=None,
            acked_with_cloud_answer=False, identity=self.identity, content_sha256=self.digest, conflict_of=None),
            "stored")

    def __call__(self, conn: sqlite3.Connection) -> Enqueued:
        identity = self.identity
        cursor = conn.execute(_INSERT_UNLESS_KNOWN, (*self._values(identity, PENDING, None), identity, identity))
        if cursor.rowcount == 1:  # a sale never seen: the common case, one statement
            return self._stored(cursor.lastrowid)  # type: ignore[arg-type]
        rows = [Invoice.from_row(r) for r in conn.execute(
            "SELECT * FROM invoices WHERE identity = ? OR key = ? ORDER BY id", (identity, identity))]
        for known in rows:
            if known.content_sha256 == self.digest:
                return Enqueued(known, "duplicate")
        original = rows[0]
        held = conn.execute(_INSERT, self._values(_conflict_key(identity, self.digest), HELD, original.id)).fetchone()
        return Enqueued(Invoice.from_row(held), "conflict", original)

    @staticmethod
    def together(conn: sqlite3.Connection, stores: list["_Store"]) -> list[Enqueued]:
        """The same results as ``[store(conn) for store in stores]``, in two statements when every one is a sale
        never seen (distinct identities, none known): one multi-row INSERT, whose rows SQLite numbers one after
        the other in order (a new row's id is the largest id + 1), so the ids follow from the last one."""
        identities = [store.identity for store in stores]
        if len(set(identities)) < len(identities):
            return [store(conn) for store in stores]
        listed = json.dumps(identities)
        if conn.execute(_ANY_KNOWN, (listed, listed)).fetchone() is not None:
            return [store(conn) for store in stores]
        cursor = conn.execute(f"INSERT INTO invoices ({_COLUMNS}) VALUES {', '.join([_ROW] * len(stores))}",
                              [value for store in stores for value in store._values(store.identity, PENDING, None)])
        first = cursor.lastrowid - len(stores) + 1  # type: ignore[operator]
        return [store._stored(first + index) for index, store in enumerate(stores)]


#: At most this many sent outcomes share one commit.
SENT_BATCH_MAX = 256


@dataclass
class _SentBatch:
    committed: "asyncio.Future[None]"
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    flushing: bool = False


def _mark_sent(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.executemany(
        "UPDATE invoices SET state = ?, sent_at = ?, last_attempt_at = ?, attempts = attempts + 1,"
        " cloud_status = ?, cloud_body = ?, cloud_content_type = ?, last_error = NULL,"
        " acked_with_cloud_answer = ? WHERE id = ? AND state = ?", rows)


def _conflict_key(identity: str, digest: str) -> str:
    """The key a held conflict is stored (and, once released, delivered) under: the identity and the start of
    its own content hash, so the same conflicting document posted again is recognised as a repeat."""
    return f"{identity}~{digest[:16]}"
