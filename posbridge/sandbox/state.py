"""The sandbox cloud's memory: members, received invoices, fault settings and request counters.

Everything that changes lives in one `SandboxState` guarded by one `threading.Lock`. Every mutating method
does its whole read-decide-write step inside that lock without awaiting, so the guarantees below hold
whatever the concurrency (many asyncio tasks, or the embedded server's thread plus a test's thread):

- an invoice is *accepted* (points counted) at most once per key, whatever the number of deliveries;
- a duplicate delivery (same `Idempotency-Key`, or the same invoice key with the same content) gets the first
  answer back, status and body, and changes no balance; the same invoice key with different content under a
  new `Idempotency-Key` is filed as a conflict (`key~2`), accepted as an invoice of its own and listed so;
- the exact bytes and Content-Type of the first accepted delivery are kept for `GET /sandbox/invoices/{key}`.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from posbridge.errors import UnreadableInvoice

JsonDict = dict[str, Any]


class Member(BaseModel):
    """A loyalty member as the cloud answers it. Unknown fields are refused so that typos in seeds show."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    card_number: str | None = None
    name: str = ""
    email: str | None = None
    points: int = 0
    level: str | None = None


class Faults(BaseModel):
    """Fault injection settings; the defaults are a healthy cloud.

    - `latency_ms`: added before answering every cloud call (`/agora/...`).
    - `error_rate` (0..1): share of cloud calls answered `error_status` (default 503), with a
      `Retry-After: <retry_after>` header when `retry_after` is set.
    - `reset_rate` (0..1): share of invoice calls that are recorded and counted, and whose connection is
      then dropped without an answer.
    - `outage`: every cloud call's connection is dropped without any HTTP answer.
    - `auth_fail`: every cloud call answers 401 `{"error": "invalid_token"}`.
    """

    model_config = ConfigDict(extra="forbid")

    latency_ms: int = Field(default=0, ge=0, le=600_000)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    error_status: int = Field(default=503, ge=400, le=599)
    retry_after: int | None = Field(default=None, ge=0)
    reset_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    outage: bool = False
    auth_fail: bool = False

    @field_validator("error_rate", "reset_rate")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number between 0 and 1")
        return value

    def merged(self, patch: Mapping[str, Any]) -> Faults:
        """Return these faults with `patch` applied. A key set to null goes back to its default.

        Raises `pydantic.ValidationError` for unknown keys or bad values; `self` is never changed.
        """
        if not isinstance(patch, Mapping):
            raise TypeError("faults must be a JSON object")
        values = self.model_dump()
        defaults = Faults().model_dump()
        for key, value in patch.items():
            values[key] = defaults.get(key) if value is None and key in defaults else value
        return Faults.model_validate(values, strict=False)


@dataclass
class Answer:
    """A status and JSON body the invoice route answers with (kept so duplicates get the same one)."""

    status: int
    body: JsonDict


@dataclass
class InvoiceRecord:
    """Everything the sandbox knows about one invoice key."""

    key: str
    deliveries: int = 0
    accepted: int = 0
    member: str | None = None
    points: int = 0
    idempotency_keys: list[str] = field(default_factory=list)
    content_type: str | None = None
    body: bytes = b""
    answer: Answer | None = None
    content: str = ""  # hash of the canonical JSON: a different invoice under the same key is a conflict

    def summary(self) -> JsonDict:
        """The admin view of this record (no body; see `GET /sandbox/invoices/{key}` for the bytes)."""
        return {
            "key": self.key,
            "deliveries": self.deliveries,
            "accepted": self.accepted,
            "member": self.member,
            "points": self.points,
            "idempotency_keys": list(self.idempotency_keys),
            "content_type": self.content_type,
            "body_sha256": hashlib.sha256(self.body).hexdigest(),
            "conflict_of": self.key.rsplit("~", 1)[0] if "~" in self.key else None,
        }


_TOTAL_PATHS: tuple[tuple[str, ...], ...] = (("Totals", "GrossAmount"), ("Total",), ("total",))


def _dig(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def parse_invoice(body: bytes) -> JsonDict:
    """Decode `body` as a JSON object, or raise `UnreadableInvoice`."""
    try:
        doc = json.loads(body.removeprefix(b"\xef\xbb\xbf"))  # a UTF-8 BOM, as some POS clients send
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableInvoice(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UnreadableInvoice("body must be a JSON object")
    return doc


def invoice_total(doc: JsonDict) -> Decimal:
    """The invoice total: `Totals.GrossAmount`, else `Total`, else `total`.

    JSON numbers and numeric strings are accepted; anything else raises `UnreadableInvoice`.
    """
    for path in _TOTAL_PATHS:
        value = _dig(doc, path)
        if value is None:
            continue
        name = ".".join(path)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise UnreadableInvoice(f"total {name} is not a number")
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise UnreadableInvoice(f"total {name} is not a number") from None
        if not amount.is_finite():
            raise UnreadableInvoice(f"total {name} is not a finite number")
        return amount
    raise UnreadableInvoice("no total (looked for Totals.GrossAmount, Total, total)")


def points_for(total: Decimal) -> int:
    """1 point per whole currency unit, truncated toward zero: 5.70 -> 5, -19.95 -> -19."""
    return int(total)


def invoice_member(doc: JsonDict) -> str | None:
    """`Loyalty.MemberId` as text, or None when the invoice names no member."""
    value = _dig(doc, ("Loyalty", "MemberId"))
    if value is None or isinstance(value, dict | list) or str(value).strip() == "":
        return None
    return str(value).strip()


def _part(value: Any) -> str:
    """One part of an invoice key: text percent-encoded, '-' and ':' included, so no value forges another key."""
    return urllib.parse.quote(str(value), safe="").replace("-", "%2D")


def invoice_key(doc: JsonDict | None, body: bytes, idempotency_key: str | None) -> str:
    """The key the sandbox files an invoice under (its own, like a real cloud's, not the bridge's).

    `gid:<GlobalId>` when the document has one; else `"{Serie}-{Number}"` prefixed by `"{Workplace.Id}:"` when
    the document names its workplace (two shops sharing a series are different invoices), each part
    percent-encoded (`-` and `:` too); else the `Idempotency-Key`, else `sha256:<hex of body>`.
    """
    if doc is not None:
        global_id = doc.get("GlobalId")
        if isinstance(global_id, str | int) and not isinstance(global_id, bool) and str(global_id) != "":
            return "gid:" + _part(global_id)
        serie, number = doc.get("Serie"), doc.get("Number")
        if serie not in (None, "") and number not in (None, "") and not isinstance(serie, dict | list) \
                and not isinstance(number, dict | list):
            workplace = _dig(doc, ("Workplace", "Id"))
            scope = f"{_part(workplace)}:" if isinstance(workplace, str | int) and not isinstance(workplace, bool) \
                else ""
            return f"{scope}{_part(serie)}-{_part(number)}"
    if idempotency_key:
        return idempotency_key
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _content(doc: JsonDict | None, body: bytes) -> str:
    """What makes two deliveries under one key the same invoice: the canonical JSON, else the bytes."""
    if doc is None:
        return hashlib.sha256(body).hexdigest()
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class SandboxState:
    """Members, invoices, faults and counters of one sandbox cloud. Thread-safe; see the module doc."""

    def __init__(self, members: Iterable[Member | Mapping[str, Any]] = (), faults: Faults | None = None) -> None:
        self._lock = threading.Lock()
        self._members: dict[str, Member] = {}
        self._invoices: dict[str, InvoiceRecord] = {}
        self._by_idempotency_key: dict[str, str] = {}
        self._faults = faults or Faults()
        self._calls: Counter[str] = Counter()
        self._member_calls: Counter[str] = Counter()
        self._initial_members = self.upsert_members(members)

    # -- members -------------------------------------------------------------------------------------
    def upsert_members(self, members: Iterable[Member | Mapping[str, Any]]) -> list[Member]:
        """Insert or replace members by id. Validates all first: a bad entry changes nothing."""
        parsed = [m if isinstance(m, Member) else Member.model_validate(m) for m in members]
        with self._lock:
            for member in parsed:
                self._members[member.id] = member.model_copy()
        return parsed

    def members(self) -> list[JsonDict]:
        with self._lock:
            return [m.model_dump() for m in self._members.values()]

    def _find_member(self, member_id: str) -> Member | None:
        member = self._members.get(member_id)
        if member is not None:
            return member
        for candidate in self._members.values():
            if candidate.card_number is not None and candidate.card_number == member_id:
                return candidate
        return None

    def lookup_member(self, member_id: str) -> JsonDict | None:
        """The member whose id or card number is `member_id`, as the cloud's 200 body; None if unknown."""
        with self._lock:
            member = self._find_member(member_id)
            return member.model_dump() if member is not None else None

    # -- faults --------------------------------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def update_faults(self, patch: Mapping[str, Any]) -> Faults:
        """Merge `patch` into the current faults (raises `ValidationError`/`TypeError` and changes nothing)."""
        with self._lock:
            self._faults = self._faults.merged(patch)
            return self._faults

    def clear_faults(self) -> Faults:
        with self._lock:
            self._faults = Faults()
            return self._faults

    # -- request counters ----------------------------------------------------------------------------
    def count_call(self, route: str, member_id: str | None = None) -> None:
        """Count one cloud call that reached the sandbox (before any fault decides its fate)."""
        with self._lock:
            self._calls[route] += 1
            if member_id is not None:
                self._member_calls[member_id] += 1

    def requests(self) -> JsonDict:
        with self._lock:
            return {
                "member": self._calls.get("member", 0),
                "invoices": self._calls.get("invoices", 0),
                "other": self._calls.get("other", 0),
                "by_member": dict(self._member_calls),
            }

    def reset_requests(self) -> None:
        with self._lock:
            self._calls.clear()
            self._member_calls.clear()

    def reset(self) -> None:
        """Back to the start: initial members and balances, no invoices, no faults, zero counters."""
        with self._lock:
            self._members = {m.id: m.model_copy() for m in self._initial_members}
            self._invoices.clear()
            self._by_idempotency_key.clear()
            self._faults = Faults()
            self._calls.clear()
            self._member_calls.clear()

    # -- invoices ------------------------------------------------------------------------------------
    def submit_invoice(self, body: bytes, content_type: str | None, idempotency_key: str | None) -> Answer:
        """Record one authenticated delivery and return the answer the cloud gives to it.

        Duplicates (known `Idempotency-Key` or known invoice key that was accepted) get the first answer
        and change nothing but the delivery count. Unreadable invoices answer 422 and are counted as
        deliveries, never accepted; their answer is not remembered, so a corrected resend can succeed.
        """
        idempotency_key = idempotency_key or None
        doc: JsonDict | None = None
        problem: str | None = None
        total = Decimal(0)
        try:
            doc = parse_invoice(body)
            total = invoice_total(doc)
        except UnreadableInvoice as exc:
            problem = str(exc)
        key = invoice_key(doc, body, idempotency_key)
        content = _content(doc, body)

        with self._lock:
            record = self._existing(key, idempotency_key)
            if record is not None and record.answer is not None and record.content != content \
                    and idempotency_key not in record.idempotency_keys:
                # the same invoice key with other content under a new Idempotency-Key: a sale of its own (a
                # conflict a person released on the bridge), filed beside the first and listed as a conflict
                key = self._conflict_key(key, content)
                record = self._invoices.get(key)
            if record is not None and record.answer is not None:
                record.deliveries += 1
                self._remember_idempotency_key(record, idempotency_key)
                return record.answer
            record = self._invoices.setdefault(key, InvoiceRecord(key=key))
            record.content = content
            record.deliveries += 1
            if problem is not None or doc is None:
                if not record.body:
                    record.body, record.content_type = body, content_type
                return Answer(422, {"error": "unreadable_invoice", "detail": problem})

            raw_member = invoice_member(doc)
            awarded, balance, member_id = 0, None, raw_member
            member = self._find_member(raw_member) if raw_member is not None else None
            if member is not None:
                awarded = points_for(total)
                member.points += awarded
                balance, member_id = member.points, member.id
            record.accepted += 1
            record.member, record.points = member_id, awarded
            record.body, record.content_type = body, content_type
            record.answer = Answer(200, {
                "invoice": key, "member": member_id, "points_awarded": awarded, "balance": balance,
            })
            self._remember_idempotency_key(record, idempotency_key)
            return record.answer

    def _conflict_key(self, key: str, content: str) -> str:
        """Where a different invoice under a known key is filed: ``key~2``, ``key~3``... (the same content
        again finds its own)."""
        number = 2
        while (candidate := self._invoices.get(f"{key}~{number}")) is not None and candidate.content != content:
            number += 1
        return f"{key}~{number}"

    def _existing(self, key: str, idempotency_key: str | None) -> InvoiceRecord | None:
        if idempotency_key is not None and idempotency_key in self._by_idempotency_key:
            return self._invoices[self._by_idempotency_key[idempotency_key]]
        return self._invoices.get(key)

    def _remember_idempotency_key(self, record: InvoiceRecord, idempotency_key: str | None) -> None:
        if idempotency_key is None:
            return
        if idempotency_key not in record.idempotency_keys:
            record.idempotency_keys.append(idempotency_key)
        if record.answer is not None:
            self._by_idempotency_key.setdefault(idempotency_key, record.key)

    def invoices(self) -> list[JsonDict]:
        with self._lock:
            return [r.summary() for r in self._invoices.values()]

    def invoice_body(self, key: str) -> tuple[bytes, str | None] | None:
        """Bytes and Content-Type of the first accepted delivery (or first delivery if none was accepted)."""
        with self._lock:
            record = self._invoices.get(key)
            return (record.body, record.content_type) if record is not None else None

    def reset_invoices(self) -> None:
        """Forget every invoice and idempotency key (member balances are kept)."""
        with self._lock:
            self._invoices.clear()
            self._by_idempotency_key.clear()


__all__ = [
    "Answer", "Faults", "InvoiceRecord", "JsonDict", "Member", "SandboxState", "UnreadableInvoice",
    "ValidationError", "invoice_key", "invoice_member", "invoice_total", "parse_invoice", "points_for",
]
