"""Member validation that keeps answering when the shop's internet does not.

What callers may rely on (``Members.lookup``):

- The cloud is asked first, bounded by ``[members] timeout`` (default 1.5 s) end to end: a cashier is waiting.
- A 2xx answer is passed on verbatim (status, body, content type) and cached with its time.
- When the cloud cannot be reached in time (or answers 5xx, or refuses the bridge's token), a cached 2xx
  younger than ``max_stale`` is served, marked stale with its age; an unknown member follows the
  ``unknown_offline`` policy (503 error, or a provisional 200 ``{"id", "provisional": true}``).
- A 404 is passed on and remembered for ``not_found_ttl``, so a bad card does not hammer the cloud.
- Concurrent look-ups of one member share one cloud request.
- After a failure the cloud is given ``RETRY_CLOUD_AFTER`` seconds before a cashier waits on it again;
  meanwhile answers come from the cache at once and one background request checks whether it is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from posbridge.cloud import CloudAnswer, CloudClient
from posbridge.config import MemberSettings
from posbridge.db import Reader, Writer
from posbridge.errors import CloudAuthError, CloudUnavailable, StorageError

log = logging.getLogger(__name__)

RETRY_CLOUD_AFTER = 15.0
RESULTS = ("fresh", "stale", "miss", "not_found", "rejected", "provisional", "error")


@dataclass(frozen=True)
class MemberAnswer:
    """What the POS receives, and where it came from.

    ``cache`` is ``"fresh"`` (from the cloud just now), ``"stale"`` (from the cache, cloud unreachable),
    or None (a policy or error answer). ``result`` is one of RESULTS, for metrics and logs.
    """

    status: int
    body: bytes
    content_type: str
    cache: str | None
    result: str
    age: float | None = None
    source: str = "cloud"
    headers: dict[str, str] = field(default_factory=dict)

    def http_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.cache:
            headers["X-Posbridge-Cache"] = self.cache
        if self.age is not None:
            headers["Age"] = str(int(self.age))
        return headers

    def data(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


def _json(status: int, document: dict[str, Any], *, result: str, source: str) -> MemberAnswer:
    return MemberAnswer(status, json.dumps(document).encode(), "application/json", None, result, source=source)


class Members:
    """Look-ups with a cache in SQLite (table ``members``)."""

    def __init__(self, cloud: CloudClient, writer: Writer, reader: Reader, settings: MemberSettings) -> None:
        self._cloud = cloud
        self._writer = writer
        self._reader = reader
        self._settings = settings
        self._flights: dict[str, asyncio.Future[CloudAnswer]] = {}
        self._down_since: float | None = None
        self._background: set[asyncio.Task] = set()
        self.auth_problem: str | None = None
        self.counters = {name: 0 for name in RESULTS}

    @property
    def cloud_reachable(self) -> bool:
        return self._down_since is None

    async def lookup(self, member_id: str) -> MemberAnswer:
        answer = await self._lookup(member_id)
        self.counters[answer.result] = self.counters.get(answer.result, 0) + 1
        return answer

    async def _lookup(self, member_id: str) -> MemberAnswer:
        cached = await self._cached(member_id)
        now = time.time()
        if cached is not None and cached["status"] == 404 and now - cached["fetched_at"] < self._settings.not_found_ttl:
            return MemberAnswer(404, cached["body"], cached["content_type"] or "application/json", "fresh",
                                "not_found", age=now - cached["fetched_at"], source="cache")
        if self._down_since is not None and now - self._down_since < RETRY_CLOUD_AFTER:
            self._refresh_in_background(member_id)
            return await self._offline_answer(member_id, cached, "the cloud was unreachable moments ago")
        try:
            answer = await self._shared_request(member_id)
        except (CloudUnavailable, asyncio.TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, CloudUnavailable) else "the cloud did not answer in time"
            self._mark_down(reason)
            return await self._offline_answer(member_id, cached, reason)
        except CloudAuthError as exc:
            self.auth_problem = str(exc)
            return await self._offline_answer(member_id, cached, str(exc))
        return await self._remember(member_id, answer)

    async def _shared_request(self, member_id: str) -> CloudAnswer:
        """One cloud request per member at a time; everyone asking meanwhile gets its answer."""
        flight = self._flights.get(member_id)
        if flight is None:
            flight = asyncio.ensure_future(self._ask_cloud(member_id))
            self._flights[member_id] = flight
            flight.add_done_callback(lambda _: self._flights.pop(member_id, None))
        return await asyncio.shield(flight)

    async def _ask_cloud(self, member_id: str) -> CloudAnswer:
        timeout = self._settings.timeout
        return await asyncio.wait_for(self._cloud.get_member(member_id, timeout=timeout), timeout)

    def _refresh_in_background(self, member_id: str) -> None:
        if self._background:
            return

        async def refresh() -> None:
            try:
                answer = await self._shared_request(member_id)
            except (CloudUnavailable, asyncio.TimeoutError, CloudAuthError):
                self._down_since = time.time()
                return
            await self._remember(member_id, answer)

        task = asyncio.ensure_future(refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _mark_down(self, reason: str) -> None:
        if self._down_since is None:
            log.warning("member look-ups: cloud unreachable (%s); answering from the cache", reason)
        self._down_since = time.time()

    async def _remember(self, member_id: str, answer: CloudAnswer) -> MemberAnswer:
        if self._down_since is not None:
            log.info("member look-ups: the cloud answers again")
        self._down_since = None
        self.auth_problem = None
        content_type = answer.content_type or "application/json"
        if 200 <= answer.status < 300 or answer.status == 404:
            await self._store(member_id, answer)
        if answer.status == 404:
            return MemberAnswer(404, answer.body, content_type, "fresh", "not_found")
        if 200 <= answer.status < 300:
            return MemberAnswer(answer.status, answer.body, content_type, "fresh", "fresh")
        return MemberAnswer(answer.status, answer.body, content_type, None, "rejected")

    async def _offline_answer(self, member_id: str, cached: dict[str, Any] | None, reason: str) -> MemberAnswer:
        now = time.time()
        if cached is not None and 200 <= cached["status"] < 300 and now - cached["fetched_at"] <= self._settings.max_stale:
            await self._touch(member_id)
            return MemberAnswer(cached["status"], cached["body"], cached["content_type"] or "application/json",
                                "stale", "stale", age=now - cached["fetched_at"], source="cache")
        if self._settings.unknown_offline == "accept":
            return MemberAnswer(200, json.dumps({"id": member_id, "provisional": True}).encode(),
                                "application/json", None, "provisional", source="policy")
        return _json(503, {"error": "cloud_unreachable",
                           "detail": f"cannot validate this member now: {reason}, and the bridge has no recent "
                                     "answer for this card in its cache"},
                     result="miss", source="policy")

    # -- the cache table --

    async def _cached(self, member_id: str) -> dict[str, Any] | None:
        try:
            row = await self._reader.run(
                lambda c: c.execute("SELECT * FROM members WHERE member_id = ?", (member_id,)).fetchone())
        except StorageError as exc:
            log.error("member cache unreadable: %s", exc)
            return None
        return dict(row) if row else None

    async def _store(self, member_id: str, answer: CloudAnswer) -> None:
        now = time.time()

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO members (member_id, status, body, content_type, fetched_at, last_used_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(member_id) DO UPDATE SET status = excluded.status,"
                " body = excluded.body, content_type = excluded.content_type, fetched_at = excluded.fetched_at,"
                " last_used_at = excluded.last_used_at",
                (member_id, answer.status, answer.body, answer.content_type, now, now),
            )

        try:
            await self._writer.submit(job)
        except StorageError as exc:  # the POS still gets its answer; only the offline copy is missing
            log.error("could not cache a member answer: %s", exc)

    async def _touch(self, member_id: str) -> None:
        now = time.time()
        try:
            await self._writer.submit(lambda c: c.execute(
                "UPDATE members SET last_used_at = ? WHERE member_id = ?", (now, member_id)))
        except StorageError:
            pass

    async def purge(self) -> int:
        """Forget entries unused for ``max_stale`` (personal data is kept no longer than it is useful)."""
        cutoff = time.time() - self._settings.max_stale
        return await self._writer.submit(
            lambda c: c.execute("DELETE FROM members WHERE last_used_at < ?", (cutoff,)).rowcount)
