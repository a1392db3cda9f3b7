"""An invoice as the POS sends it: which requests can carry one, strict JSON, its identity and display fields.

The bridge never re-serializes an invoice (it forwards the bytes it received), but it must read a few fields
and must refuse what the cloud could read differently from the bridge. What callers may rely on:

- :func:`check_content_type` accepts what POS clients really send with a JSON body: ``application/json`` and
  ``application/*+json``, ``text/plain`` (.NET's ``StringContent`` default), ``text/json``, or no Content-Type
  at all; a ``charset`` other than UTF-8 is refused, as is any other media type.
- :func:`parse_invoice` accepts a JSON object in UTF-8 (a leading BOM is skipped for parsing only) and refuses,
  naming the place: ``NaN``/``Infinity``, lone surrogates, and a name given twice in one object.
- :func:`invoice_identity` never gives two different sales the same identity by accident of encoding; see its
  docstring for the rule (``GlobalId``, else scope + series + number, else the hash of the canonical JSON).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import urllib.parse
from typing import Any

from posbridge.config import InvoiceSettings
from posbridge.errors import InvoiceRefused

BOM = b"\xef\xbb\xbf"
JSON_MEDIA_TYPES = frozenset({"application/json", "text/plain", "text/json"})
UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
MAX_KEY_LENGTH = 200
"""Longer identities are replaced by a hash of themselves (they travel in an HTTP header)."""

_CANONICAL_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
# What stays as-is inside a key part; the rest is percent-encoded, so ';' and '=' (the separators) and '%'
# can never come from a value, and the key stays a valid HTTP header value.
_PART_SAFE = "-_.~:/+@!$&'()*,"


# --- the request ------------------------------------------------------------------------------------------


def check_content_type(value: str | None) -> str:
    """The Content-Type to store and forward with the invoice (``""`` when the POS sent none).

    Raises :class:`InvoiceRefused` (``unsupported_media_type``) for a media type that cannot carry the JSON
    invoice, or a charset other than UTF-8."""
    if value is None or not value.strip():
        return ""
    media, _, parameters = value.partition(";")
    media = media.strip().lower()
    if media not in JSON_MEDIA_TYPES and not (media.startswith("application/") and media.endswith("+json")):
        raise InvoiceRefused("unsupported_media_type",
                             f"Content-Type {media!r} cannot carry an invoice; send the JSON invoice as "
                             "application/json (text/plain and text/json are accepted too)")
    for parameter in parameters.split(";"):
        name, _, charset = parameter.partition("=")
        if name.strip().lower() == "charset" and charset.strip().strip('"').lower() not in UTF8_CHARSETS:
            raise InvoiceRefused("unsupported_media_type",
                                 f"charset {charset.strip()!r} is not supported; send the invoice in UTF-8")
    return value


def parse_invoice(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, read strictly; raises :class:`InvoiceRefused` (``invalid_json``) with the
    reason and the place."""
    text_bytes = body[len(BOM):] if body.startswith(BOM) else body
    if not text_bytes.strip():
        raise InvoiceRefused("invalid_json", "the body is empty; send the invoice as a JSON object")
    try:
        text = text_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + (len(body) - len(text_bytes))
        raise InvoiceRefused("invalid_json", f"the body is not UTF-8: byte 0x{body[offset]:02x} at offset "
                             f"{offset} cannot be decoded") from None
    try:
        document = json.loads(text, object_pairs_hook=_object_without_repeats, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvoiceRefused("invalid_json", f"the body is not valid JSON: {exc.msg} at line {exc.lineno} "
                             f"column {exc.colno} (offset {exc.pos})") from None
    except RecursionError:
        raise InvoiceRefused("invalid_json", "the JSON is nested too deeply to be an invoice") from None
    if not isinstance(document, dict):
        raise InvoiceRefused("invalid_json",
                             f"an invoice must be a JSON object, not a {type(document).__name__}")
    # a lone surrogate can only come from a \uD800-\uDFFF escape (the UTF-8 decode refused raw ones): without
    # such an escape in the text there is nothing to look for, and the walk over every string is skipped
    where = _lone_surrogate(document, "") if _SURROGATE_ESCAPE.search(text) else None
    if where is not None:
        raise InvoiceRefused("invalid_json", f"{where} holds a lone surrogate (an escaped \\ud800-\\udfff that "
                             "is not half of a pair): it is not text, and other readers would see it differently")
    return document


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for name, value in pairs:
        if name in seen:
            raise InvoiceRefused("invalid_json",
                                 f"the name {name!r} appears twice in one object; readers disagree on which value "
                                 "counts, so the invoice is refused rather than guessed at")
        seen[name] = value
    return seen


def _no_constant(name: str) -> Any:
    raise InvoiceRefused("invalid_json", f"{name} is not a JSON number (the JSON standard has no NaN or "
                         "Infinity); send a number or null")


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The path of the first string (value or name) holding a lone surrogate, or None."""
    if isinstance(value, str):
        return path or "the document" if any("\ud800" <= ch <= "\udfff" for ch in value) else None
    if isinstance(value, dict):
        for name, item in value.items():
            here = f"{path}.{name}" if path else name
            if any("\ud800" <= ch <= "\udfff" for ch in name):
                return f"a name in {path or 'the top-level object'}"
            found = _lone_surrogate(item, here)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _lone_surrogate(item, f"{path}[{index}]")
            if found:
                return found
    return None


# --- identity ---------------------------------------------------------------------------------------------


def canonical_json(document: Any) -> bytes:
    """Sorted names, no spaces, ASCII escapes: the same document always gives the same bytes, whatever the
    whitespace and order of names it came with."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def content_digest(document: Any) -> str:
    """SHA-256 (hex) of the canonical JSON: equal for two posts of the same sale, whatever their formatting."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


def field(document: Any, path: str) -> Any:
    """``"Workplace.Id"`` -> document["Workplace"]["Id"], or None when any step is missing."""
    value = document
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value


def key_part(value: Any) -> str | None:
    """A field's value as it counts in an identity, or None when it cannot identify anything.

    The deliberate rules: text counts exactly as sent (``" X "`` is not ``"X"``, case matters); a JSON integer
    and a string of the same canonical decimal digits are the same number (``5`` and ``"5"`` -- POS exports
    disagree on quoting numbers -- but ``"05"`` is the text 05); other numbers count as Python writes them
    (``5.0`` is not ``5``); true/false, null, objects and arrays identify nothing."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return value
    return None


def _encode(text: str) -> str:
    return urllib.parse.quote(text, safe=_PART_SAFE)


def invoice_identity(document: dict[str, Any], settings: InvoiceSettings) -> str:
    """Which sale this is, as a key that is also a valid ``Idempotency-Key`` header value.

    - ``gid:<GlobalId>`` when the document has its own unique id (``[invoices] id_field``);
    - else ``doc:<name>=<value>;...`` over ``scope_fields`` that are present (the workplace: two tills or
      shops sharing a series stay apart) and ``key_fields``, which must all be present (series and number);
      each value is percent-encoded, so no separator can be forged from inside a value;
    - else ``sha256:<hex>`` of the canonical JSON (the same document posted again is the same sale).

    An identity longer than :data:`MAX_KEY_LENGTH` is replaced by ``<kind>-sha256:<hex of itself>``."""
    if settings.id_field:
        own = key_part(field(document, settings.id_field))
        if own:
            return _bounded("gid:" + _encode(own))
    parts = [(name, key_part(field(document, name))) for name in settings.key_fields]
    if settings.key_fields and all(value is not None for _, value in parts):
        scope = [(name, key_part(field(document, name))) for name in settings.scope_fields]
        named = [(name, value) for name, value in [*scope, *parts] if value is not None]
        return _bounded("doc:" + ";".join(f"{_encode(name)}={_encode(value)}" for name, value in named))
    return "sha256:" + content_digest(document)


def _bounded(key: str) -> str:
    if len(key) <= MAX_KEY_LENGTH:
        return key
    kind = key.split(":", 1)[0]
    return f"{kind}-sha256:" + hashlib.sha256(key.encode("ascii")).hexdigest()


def display_fields(document: Any, settings: InvoiceSettings) -> tuple[str | None, float | None]:
    """Member id and amount, for people and metrics only; missing or odd values give None."""
    member_value = key_part(field(document, settings.member_field))
    member = member_value.strip() if member_value else None
    amount_value = field(document, settings.amount_field)
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
