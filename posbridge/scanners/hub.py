"""Where scans become published results: card parsing, member look-up, fan-out to listeners.

Every scanner's ``on_scan`` is :meth:`ScanHub.handle`. It turns the scanned text into a member id
(:func:`posbridge.cards.parse_card`), asks ``lookup`` about that member, and publishes one dict::

    {"source": "front-door", "text": "...", "symbology": "qr", "member_id": "OW7K2M9Q",
     "member": {"status": 200, "cache": "fresh", "data": {...}} | None, "error": None | "why", "at": ISO-8601 UTC}

to ``GET /v1/events`` listeners and ``GET /v1/scans/last``. Callers rely on:

* ``handle`` never raises for a bad scan or a failing look-up: the reason goes into ``error``;
* a blank read (whitespace, padding or framing only, :func:`~posbridge.scanners.is_blank`) is never published and
  never replaces ``/v1/scans/last``: ``handle`` returns None for it;
* a slow or stuck listener loses its oldest events, it never slows a scanner down (bounded queue per listener);
* logs at INFO show only the last four characters of a member id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from posbridge.cards import parse_card
from posbridge.config import CardSettings
from posbridge.logs import mask_member
from posbridge.scanners import ScanEvent, is_blank

log = logging.getLogger("posbridge.scans")

QUEUE_SIZE = 100


@dataclass(frozen=True)
class MemberLookup:
    """What a member look-up answered: HTTP-like ``status``, ``cache`` ("fresh", "stale", "miss" or None), ``data``.

    ``lookup`` may also return any object with ``status`` and ``cache`` attributes and ``data`` as an attribute or
    a method (``posbridge.members.MemberAnswer``).
    """

    status: int
    cache: str | None
    data: Any


Lookup = Callable[[str], Awaitable[Any]]


def _member_dict(answer: Any) -> dict[str, Any]:
    data = answer.data
    if callable(data):
        data = data()
    return {"status": int(answer.status), "cache": answer.cache, "data": data}


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_CLOSED = object()


class Subscription:
    """One listener's view of the published scans: ``async for scan in hub.subscribe(): ...``.

    Registered as soon as it is created (no scan published afterwards is missed); call :meth:`aclose` (or use
    ``async with``) when done. ``dropped`` counts events lost because the listener fell behind.
    """

    def __init__(self, hub: "ScanHub", size: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=size)
        self.dropped = 0

    def offer(self, item: Any) -> None:
        """Queue without waiting; when full, the oldest event makes room."""
        if self._queue.full():
            self._queue.get_nowait()
            if item is not _CLOSED:
                self.dropped += 1
        self._queue.put_nowait(item)

    async def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next scan; None after ``timeout`` seconds without one. Raises StopAsyncIteration when closed."""
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # stay closed for later calls
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self.get()
        assert item is not None
        return item

    async def aclose(self) -> None:
        self._hub._subscribers.discard(self)

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


class ScanHub:
    """Parses, validates and publishes scans. One per daemon; ``lookup=None`` publishes without a look-up."""

    def __init__(self, card_settings: CardSettings, lookup: Lookup | None = None, *,
                 queue_size: int = QUEUE_SIZE) -> None:
        self._settings = card_settings
        self._lookup = lookup
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self.last: dict[str, Any] | None = None
        self.published = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscription:
        """A new listener, registered now."""
        subscription = Subscription(self, self._queue_size)
        self._subscribers.add(subscription)
        return subscription

    def close(self) -> None:
        """End every listener's iteration (the daemon is stopping); event streams then finish cleanly."""
        for subscription in list(self._subscribers):
            subscription.offer(_CLOSED)
        self._subscribers.clear()

    async def handle(self, event: ScanEvent) -> dict[str, Any] | None:
        """Parse, look up, publish; returns the published dict (None for a blank read, which is not published)."""
        if is_blank(event.text):
            log.debug("blank read from %s is no scan (%d bytes)", event.source, len(event.raw))
            return None
        card = parse_card(event.text, self._settings, symbology=event.symbology, aim=event.aim)
        error = card.error
        member: dict[str, Any] | None = None
        if card.member_id is not None and self._lookup is not None:
            try:
                member = _member_dict(await self._lookup(card.member_id))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a look-up failure is part of the result, not a crash
                error = f"member look-up failed: {exc or type(exc).__name__}"
        published = {
            "source": event.source,
            "text": card.as_dict()["input"],  # cut when huge, always valid UTF-8
            "symbology": card.symbology or event.symbology,
            "member_id": card.member_id,
            "member": member,
            "error": error,
            "at": _iso(event.at),
        }
        if card.member_id is None:
            log.info("scan from %s is not a member card: %s", event.source, error)
        elif error:
            log.warning("scan from %s: member %s: %s", event.source, mask_member(card.member_id), error)
        else:
            result = f"{member['status']} {member['cache'] or ''}".strip() if member else "not looked up"
            log.info("scan from %s: member %s (%s) -> %s", event.source, mask_member(card.member_id),
                     published["symbology"] or "symbology unknown", result)
        self.last = published
        self.published += 1
        for subscription in list(self._subscribers):
            subscription.offer(published)
        return published
