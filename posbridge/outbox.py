"""The durable invoice queue.

What callers may rely on:

- :meth:`Outbox.enqueue` returns only after the invoice's bytes are committed (WAL, ``synchronous=FULL``).
  If the commit fails it raises :class:`StorageError` and nothing may be acknowledged.
- An invoice is stored once per key. The key comes from the configured JSON fields (default ``Serie`` +
  ``Number``), else it is the SHA-256 of the canonical JSON. Enqueueing a known key returns the existing row.
- The bytes and the Content-Type are stored exactly as received and are what delivery sends.
- A row ends ``sent`` or ``rejected``; nothing is deleted except sent rows older than the retention.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import urllib.parse
from dataclasses import dataclass
from typing import Any, Iterable

from posbridge.config import InvoiceSettings
from posbridge.db import Reader, Writer, now

PENDING, SENT, REJECTED = "pending", "sent", "rejected"
STATES = (PENDING, SENT, REJECTED)


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

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Invoice":
        data = dict(row)
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
        }


# --- reading the few fields the bridge needs ---------------------------------------------------------------


def _lookup(document: Any, path: str) -> Any:
    """``"Totals.GrossAmount"`` -> document["Totals"]["GrossAmount"], or None when any step is missing."""
    value = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        return text or None
    return None


def canonical_json(document: Any) -> bytes:
    """Sorted keys, no spaces, ASCII escapes: the same document always gives the same bytes."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


_KEY_SAFE = "-_.~:/+=@!$&'()*,;"  # what stays as-is in a key; the rest is percent-encoded (an HTTP header value)


def invoice_key(document: Any, settings: InvoiceSettings) -> str:
    """The invoice's idempotency key: the configured fields joined by ``-`` (``"T1-1042"``), safe to send as
    an HTTP header; else ``sha256:<hex>`` of the canonical JSON."""
    parts = [_scalar_text(_lookup(document, field)) for field in settings.key_fields]
    if settings.key_fields and all(part is not None for part in parts):
        joined = "-".join(parts)  # type: ignore[arg-type]
        safe = urllib.parse.quote(joined, safe=_KEY_SAFE)
        if len(safe) <= 200:
            return safe
        return "sha256:" + hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()
    try:
        return "sha256:" + hashlib.sha256(canonical_json(document)).hexdigest()
    except ValueError:  # NaN/Infinity cannot be canonical; fall back to a weaker (still stable) form
        return "sha256:" + hashlib.sha256(repr(document).encode("utf-8", "surrogatepass")).hexdigest()


def display_fields(document: Any, settings: InvoiceSettings) -> tuple[str | None, float | None]:
    """Member id and amount, for people and metrics only; missing or odd values give None."""
    member = _scalar_text(_lookup(document, settings.member_field))
    amount_value = _lookup(document, settings.amount_field)
    amount: float | None = None
    if isinstance(amount_value, (int, float)) and not isinstance(amount_value, bool):
        amount = float(amount_value) if math.isfinite(float(amount_value)) else None
    elif isinstance(amount_value, str):
        try:
            amount = float(amount_value.replace(",", "."))
            if not math.isfinite(amount):
                amount = None
        except ValueError:
            amount = None
    return (member[:64] if member else None), amount


# --- the queue --------------------------------------------------------------------------------------------


class Outbox:
    """Invoices waiting for, or done with, delivery. Writes go through the one :class:`Writer`."""

    def __init__(self, writer: Writer, reader: Reader, settings: InvoiceSettings) -> None:
        self._writer = writer
        self._reader = reader
        self._settings = settings

    async def enqueue(self, body: bytes, content_type: str, document: Any,
                      *, not_before: float | None = None) -> tuple[Invoice, bool]:
        """Store an invoice; returns ``(row, created)``. ``created`` is False for a known key.

        ``document`` is the already-parsed body (parsed once by the caller, which had to validate it).
        ``not_before`` delays the first replay attempt (the caller is delivering it inline meanwhile).
        """
        key = invoice_key(document, self._settings)
        member_id, amount = display_fields(document, self._settings)
        digest = hashlib.sha256(body).hexdigest()
        received = now()
        due = not_before if not_before is not None else received

        def job(conn: sqlite3.Connection) -> tuple[Invoice, bool]:
            cursor = conn.execute(
                "INSERT INTO invoices (key, body, content_type, body_sha256, member_id, amount, state,"
                " received_at, attempts, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)"
                " ON CONFLICT(key) DO NOTHING",
                (key, body, content_type, digest, member_id, amount, PENDING, received, due),
            )
            created = cursor.rowcount == 1
            row = conn.execute("SELECT * FROM invoices WHERE key = ?", (key,)).fetchone()
            return Invoice.from_row(row), created

        return await self._writer.submit(job)

    # -- outcomes (each one write, batched with whatever else is waiting) --

    async def mark_sent(self, invoice_id: int, status: int, body: bytes, content_type: str | None,
                        *, acked_with_cloud_answer: bool = False) -> None:
        at = now()

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE invoices SET state = ?, sent_at = ?, last_attempt_at = ?, attempts = attempts + 1,"
                " cloud_status = ?, cloud_body = ?, cloud_content_type = ?, last_error = NULL,"
                " acked_with_cloud_answer = ? WHERE id = ? AND state = ?",
                (SENT, at, at, status, body, content_type, int(acked_with_cloud_answer), invoice_id, PENDING),
            )

        await self._writer.submit(job)

    async def mark_rejected(self, invoice_id: int, status: int, body: bytes, content_type: str | None,
                            reason: str) -> None:
        at = now()

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE invoices SET state = ?, last_attempt_at = ?, attempts = attempts + 1, cloud_status = ?,"
                " cloud_body = ?, cloud_content_type = ?, last_error = ? WHERE id = ? AND state = ?",
                (REJECTED, at, status, body, content_type, reason, invoice_id, PENDING),
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
        """Put a rejected (or pending) invoice back in line, due now. Blocking; for the CLI."""

        def job(conn: sqlite3.Connection) -> Invoice | None:
            conn.execute(
                "UPDATE invoices SET state = ?, next_attempt_at = ?, last_error = NULL"
                " WHERE id = ? AND state IN (?, ?)",
                (PENDING, now(), invoice_id, PENDING, REJECTED),
            )
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
        keys = (key_or_id, urllib.parse.quote(key_or_id, safe=_KEY_SAFE))
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
