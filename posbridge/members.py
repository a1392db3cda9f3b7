"""Member validation that keeps answering when the shop's internet does not.

What callers may rely on (``Members.lookup``):

- The cloud is asked first, bounded by ``[members] timeout`` (default 1.5 s) end to end: a cashier is waiting.
- A cloud answer is passed on verbatim (status, body, content type) with ``X-Posbridge-Cache: fresh``.
  A 2xx is also cached with its time; the POS never waits for that write.
- When the cloud cannot be reached in time (or answers 5xx, or refuses the bridge's token), a cached 2xx
  younger than ``max_stale`` is served with ``X-Posbridge-Cache: stale`` and ``Age`` (whole seconds); an
  unknown member follows the ``unknown_offline`` policy (503 error, or a provisional 200
  ``{"id", "provisional": true}``), marked ``X-Posbridge-Cache: miss``. The 503's ``error`` is
  ``cloud_auth_refused`` when the cloud refused the token, ``cloud_unreachable`` otherwise.
- A 404 is passed on and remembered in memory for ``not_found_ttl`` (then answered with ``Age``, marked
  ``fresh``, or ``stale`` while the cloud is failing), so a bad card does not hammer the cloud. It also deletes that member's cached answer: the cloud no longer knows them.
- Concurrent look-ups of one member share one cloud request (the flight); its outcome is recorded once.
- After a cloud failure, for ``RETRY_CLOUD_AFTER`` seconds a member with a servable cached answer gets it at
  once, and that look-up may start a background request (at most one per ``PROBE_EVERY`` seconds) to see
  whether the cloud is back. Members without a cached answer still wait on the cloud (bounded by the
  timeout): a real answer beats a policy answer.
- Counters of results (``counters``, since start) are also added to the ``member_stats`` table, and the
  ``last_used_at`` of stale answers served is written, in one batched write at most every
  ``STATS_FLUSH_EVERY`` seconds, so look-ups during an outage do not cost an fsync each.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable

from posbridge.cloud import CloudAnswer, CloudClient
from posbridge.config import MemberSettings
from posbridge.db import Reader, Writer
from posbridge.errors import CloudAuthError, CloudUnavailable, StorageError
from posbridge.logs import LogThrottle

log = logging.getLogger(__name__)
_storage_log = LogThrottle()  # a full or failing disk fails every look-up's cache write: a line a minute is enough

RETRY_CLOUD_AFTER = 15.0
PROBE_EVERY = 1.0
STATS_FLUSH_EVERY = 1.0
NOT_FOUND_MEMORY = 4096
"""At most this many remembered 404s (oldest forgotten first): a storm of bad cards cannot grow memory."""

RESULTS = ("fresh", "stale", "miss", "provisional", "not_found", "not_found_cached", "rejected")
"""``fresh``: a 2xx from the cloud now; ``stale``: a cached 2xx, cloud unreachable; ``miss``: cloud unreachable,
nothing cached, 503 (policy reject); ``provisional``: the same under policy accept; ``not_found``: the cloud said
404 now; ``not_found_cached``: a remembered 404; ``rejected``: another 4xx from the cloud, passed on."""


@dataclass(frozen=True)
class MemberAnswer:
    """What the POS receives, and where it came from.

    ``cache`` is ``"fresh"`` (the cloud's answer, possibly a remembered 404: then ``age`` is set), ``"stale"``
    (from the cache, cloud unreachable) or ``"miss"`` (a policy answer). ``result`` is one of RESULTS, for
    metrics and logs; ``source`` is ``cloud``, ``cache`` or ``policy``; ``reason`` is for people (CLI, logs).
    """

    status: int
    body: bytes
    content_type: str | None
    cache: str | None
    result: str
    age: float | None = None
    source: str = "cloud"
    reason: str | None = None  # why the cloud's own answer could not be had (stale and policy answers)
    headers: dict[str, str] = field(default_factory=dict)

    def http_headers(self) -> dict[str, str]:
        """Headers for the POS: ``Content-Type`` (when the cloud gave one), ``X-Posbridge-Cache``, ``Age``."""
        headers = dict(self.headers)
        if self.content_type:
            headers["Content-Type"] = self.content_type
        if self.cache:
            headers["X-Posbridge-Cache"] = self.cache
        if self.age is not None:
            headers["Age"] = str(max(0, int(self.age)))  # RFC 9111: delta-seconds, a non-negative integer
        return headers

    def data(self) -> Any:
        """The body as JSON, or None when it is not JSON (the scan hub publishes this)."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


# -- SQL shared with `posbridge members` (which has no cloud and no Members) --------------------------------


def purge_rows(conn: sqlite3.Connection, cutoff: float | None) -> int:
    """Delete cached answers unused since ``cutoff`` or fetched before it (they can no longer be served), and
    any non-2xx row; ``cutoff=None`` deletes every cached answer. Returns how many rows went."""
    if cutoff is None:
        return conn.execute("DELETE FROM members").rowcount
    return conn.execute(
        "DELETE FROM members WHERE last_used_at < ? OR fetched_at < ? OR status NOT BETWEEN 200 AND 299",
        (cutoff, cutoff)).rowcount


def cache_summary(conn: sqlite3.Connection, now: float | None = None) -> dict[str, Any]:
    """Entries, their ages and the persisted look-up counters, for ``posbridge members cache``."""
    now = time.time() if now is None else now
    row = conn.execute(
        "SELECT COUNT(*), MIN(fetched_at), MAX(fetched_at), MIN(last_used_at) FROM members"
        " WHERE status BETWEEN 200 AND 299").fetchone()
    entries, oldest, newest, least_used = row[0], row[1], row[2], row[3]
    counters = {name: 0 for name in RESULTS}
    updated_at = None
    try:
        for name, value, updated in conn.execute("SELECT name, value, updated_at FROM member_stats"):
            counters[name] = value
            updated_at = max(updated_at or 0.0, updated or 0.0) or None
    except sqlite3.OperationalError:  # a database from before the member_stats table
        pass
    return {
        "entries": entries,
        "oldest_fetched_at": oldest,
        "oldest_age_seconds": None if oldest is None else max(0, int(now - oldest)),
        "newest_fetched_at": newest,
        "least_recently_used_at": least_used,
        "hits": counters["stale"] + counters["not_found_cached"],
        "misses": counters["miss"] + counters["provisional"],
        "stale": counters["stale"],
        "counters": counters,
        "counters_updated_at": updated_at,
    }


class Members:
    """Look-ups with a cache in SQLite (table ``members``). Lives on one event loop.

    ``record_stats=False`` keeps look-ups out of ``member_stats`` (the CLI's look-ups are not the POS's).
    Call :meth:`aclose` before closing the writer, so cache writes and counters already decided get written.
    """

    def __init__(self, cloud: CloudClient, writer: Writer, reader: Reader, settings: MemberSettings,
                 *, record_stats: bool = True) -> None:
        self._cloud = cloud
        self._writer = writer
        self._reader = reader
        self._settings = settings
        self._record_stats = record_stats
        self._flights: dict[str, asyncio.Future[CloudAnswer]] = {}
        self._not_found: dict[str, tuple[float, CloudAnswer]] = {}  # member -> (monotonic time, answer)
        self._down_since: float | None = None  # monotonic
        self._down_reason = ""
        self._probe: asyncio.Future[CloudAnswer] | None = None
        self._probed_at = 0.0  # monotonic
        self._tasks: set[asyncio.Future[Any]] = set()
        self._deltas: dict[str, int] = {}
        self._touched: dict[str, float] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        self.auth_problem: str | None = None
        self.counters = {name: 0 for name in RESULTS}

    @property
    def cloud_reachable(self) -> bool:
        """False from a failed cloud request until one succeeds again."""
        return self._down_since is None

    async def lookup(self, member_id: str) -> MemberAnswer:
        """What the POS should see for ``member_id`` (already normalized by ``cards.parse_card``)."""
        answer = await self._lookup(member_id)
        self._count(answer.result)
        return answer

    async def _lookup(self, member_id: str) -> MemberAnswer:
        remembered = self._recall_not_found(member_id)
        if remembered is not None:
            return remembered
        cached: dict[str, Any] | None = None
        if self._down_since is not None and time.monotonic() - self._down_since < RETRY_CLOUD_AFTER:
            cached = await self._cached(member_id)
            if self._servable(cached):
                self._probe_in_background(member_id)
                assert cached is not None
                return self._stale(member_id, cached, f"the cloud failed moments ago: {self._down_reason}")
        auth_refused = False
        try:
            answer = await asyncio.shield(self._flight(member_id))
        except CloudUnavailable as exc:
            reason = exc.reason
        except CloudAuthError as exc:
            reason, auth_refused = str(exc), True
        except Exception as exc:  # noqa: BLE001 - a bug in the cloud path must still leave the offline answer
            log.exception("member look-up: unexpected error asking the cloud")
            reason = f"internal error asking the cloud ({type(exc).__name__})"
        else:
            return self._from_cloud(answer)
        if cached is None:
            cached = await self._cached(member_id)
        return self._offline_answer(member_id, cached, reason, auth_refused=auth_refused)

    # -- the cloud --

    def _flight(self, member_id: str) -> asyncio.Future[CloudAnswer]:
        """The cloud request for ``member_id`` in progress, or a new one. Callers await it shielded, so a POS
        that hangs up does not cancel the answer the others are waiting for."""
        flight = self._flights.get(member_id)
        if flight is None:
            flight = asyncio.ensure_future(self._fetch(member_id))
            self._flights[member_id] = flight
            flight.add_done_callback(functools.partial(self._landed, member_id))
        return flight

    def _landed(self, member_id: str, flight: asyncio.Future[CloudAnswer]) -> None:
        if self._flights.get(member_id) is flight:
            del self._flights[member_id]
        if not flight.cancelled():
            flight.exception()  # retrieved here: nobody may be waiting any more (probe, POS hung up)

    async def _fetch(self, member_id: str) -> CloudAnswer:
        """One cloud request; records its outcome once for every look-up sharing it."""
        timeout = self._settings.timeout
        try:
            answer = await asyncio.wait_for(self._cloud.get_member(member_id, timeout=timeout), timeout)
        except asyncio.TimeoutError:
            reason = f"the cloud did not answer within {timeout:g} s"
            self._mark_down(reason)
            raise CloudUnavailable(reason) from None
        except CloudUnavailable as exc:
            self._mark_down(exc.reason)
            raise
        except CloudAuthError as exc:
            if self.auth_problem is None:
                log.error("member look-ups: %s; answering from the cache", exc)
            self.auth_problem = str(exc)
            raise
        self._mark_up()
        if 200 <= answer.status < 300:
            self._spawn(self._store(member_id, answer, time.time()))
        elif answer.status == 404:
            self._remember_not_found(member_id, answer)
            self._spawn(self._forget(member_id))
        return answer

    def _probe_in_background(self, member_id: str) -> None:
        """During an outage, one request at a time, at most one every ``PROBE_EVERY`` seconds, checks whether
        the cloud is back: a busy till must not turn every scan into a doomed cloud request."""
        now = time.monotonic()
        if (self._probe is None or self._probe.done()) and now - self._probed_at >= PROBE_EVERY:
            self._probed_at = now
            self._probe = self._flight(member_id)

    def _mark_down(self, reason: str) -> None:
        if self._down_since is None:
            log.warning("member look-ups: cloud unreachable (%s); answering from the cache", reason)
        self._down_since = time.monotonic()
        self._down_reason = reason

    def _mark_up(self) -> None:
        if self._down_since is not None:
            log.info("member look-ups: the cloud answers again")
        if self.auth_problem is not None:
            log.info("member look-ups: the cloud accepts the API token again")
        self._down_since = None
        self.auth_problem = None

    # -- answers --

    @staticmethod
    def _from_cloud(answer: CloudAnswer) -> MemberAnswer:
        if 200 <= answer.status < 300:
            result = "fresh"
        elif answer.status == 404:
            result = "not_found"
        else:
            result = "rejected"
        return MemberAnswer(answer.status, answer.body, answer.content_type, "fresh", result)

    def _servable(self, cached: dict[str, Any] | None) -> bool:
        return (cached is not None and 200 <= cached["status"] < 300
                and time.time() - cached["fetched_at"] <= self._settings.max_stale)

    def _stale(self, member_id: str, cached: dict[str, Any], reason: str) -> MemberAnswer:
        now = time.time()
        self._touched[member_id] = now
        self._schedule_flush()
        return MemberAnswer(cached["status"], cached["body"], cached["content_type"], "stale", "stale",
                            age=max(0.0, now - cached["fetched_at"]), source="cache", reason=reason)

    def _offline_answer(self, member_id: str, cached: dict[str, Any] | None, reason: str,
                        *, auth_refused: bool = False) -> MemberAnswer:
        if self._servable(cached):
            assert cached is not None
            return self._stale(member_id, cached, reason)
        if self._settings.unknown_offline == "accept":
            body = json.dumps({"id": member_id, "provisional": True}).encode()
            return MemberAnswer(200, body, "application/json", "miss", "provisional", source="policy",
                                reason=reason)
        if auth_refused:
            error = {"error": "cloud_auth_refused",
                     "detail": "cannot validate this member now: the cloud refuses the bridge's API token (a "
                               "technician must store a valid one: `posbridge token check`) and the bridge has no "
                               "recent answer for this card in its cache"}
        else:
            error = {"error": "cloud_unreachable",
                     "detail": f"cannot validate this member now: the cloud is unreachable ({reason}) and the "
                               "bridge has no recent answer for this card in its cache"}
        body = json.dumps(error).encode()
        return MemberAnswer(503, body, "application/json", "miss", "miss", source="policy", reason=reason)

    def _recall_not_found(self, member_id: str) -> MemberAnswer | None:
        entry = self._not_found.get(member_id)
        if entry is None:
            return None
        at, answer = entry
        age = time.monotonic() - at
        if age >= self._settings.not_found_ttl:
            del self._not_found[member_id]
            return None
        # within its time a remembered 404 is a fresh answer (RFC 9111's sense); while the cloud is failing it
        # is served because the cloud cannot be asked, so it says so like any other answer from the cache
        cache = "fresh" if self._down_since is None else "stale"
        return MemberAnswer(404, answer.body, answer.content_type, cache, "not_found_cached", age=age,
                            source="cache")

    def _remember_not_found(self, member_id: str, answer: CloudAnswer) -> None:
        if self._settings.not_found_ttl <= 0:
            return
        self._not_found.pop(member_id, None)
        self._not_found[member_id] = (time.monotonic(), answer)
        while len(self._not_found) > NOT_FOUND_MEMORY:
            del self._not_found[next(iter(self._not_found))]

    # -- the cache table and the counters --

    async def _cached(self, member_id: str) -> dict[str, Any] | None:
        try:
            row = await self._reader.run(lambda c: c.execute(
                "SELECT status, body, content_type, fetched_at FROM members WHERE member_id = ?",
                (member_id,)).fetchone())
        except StorageError as exc:
            _storage_log.log(log, logging.ERROR, "member cache unreadable: %s", exc)
            return None
        return dict(row) if row else None

    async def _store(self, member_id: str, answer: CloudAnswer, fetched_at: float) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO members (member_id, status, body, content_type, fetched_at, last_used_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(member_id) DO UPDATE SET status = excluded.status,"
                " body = excluded.body, content_type = excluded.content_type, fetched_at = excluded.fetched_at,"
                " last_used_at = excluded.last_used_at WHERE excluded.fetched_at >= members.fetched_at",
                (member_id, answer.status, answer.body, answer.content_type, fetched_at, fetched_at))

        try:
            await self._writer.submit(job)
        except StorageError as exc:  # the POS has its answer; only the offline copy is missing
            _storage_log.log(log, logging.ERROR, "could not cache a member answer: %s", exc)

    async def _forget(self, member_id: str) -> None:
        try:
            await self._writer.submit(lambda c: c.execute("DELETE FROM members WHERE member_id = ?", (member_id,)))
        except StorageError as exc:
            _storage_log.log(log, logging.ERROR, "could not forget a member the cloud no longer knows: %s", exc)

    def _count(self, result: str) -> None:
        self.counters[result] = self.counters.get(result, 0) + 1
        if self._record_stats:
            self._deltas[result] = self._deltas.get(result, 0) + 1
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(STATS_FLUSH_EVERY, self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_timer = None
        self._spawn(self._flush())

    async def _flush(self) -> None:
        """Write counter deltas and stale-answer uses in one job; on failure keep them for the next try."""
        deltas, self._deltas = self._deltas, {}
        touched, self._touched = self._touched, {}
        if not deltas and not touched:
            return

        def job(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.executemany(
                "INSERT INTO member_stats (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(name)"
                " DO UPDATE SET value = value + excluded.value, updated_at = excluded.updated_at",
                [(name, delta, now) for name, delta in deltas.items()])
            conn.executemany("UPDATE members SET last_used_at = max(last_used_at, ?) WHERE member_id = ?",
                             [(at, member_id) for member_id, at in touched.items()])

        try:
            await self._writer.submit(job)
        except StorageError as exc:
            _storage_log.log(log, logging.ERROR, "could not record member look-up counters: %s", exc)
            for name, delta in deltas.items():
                self._deltas[name] = self._deltas.get(name, 0) + delta
            for member_id, at in touched.items():
                self._touched[member_id] = max(at, self._touched.get(member_id, 0.0))

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Write what is pending (cache writes, counters); requests to the cloud in flight are abandoned."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        for flight in list(self._flights.values()):
            flight.cancel()
        await self._flush()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> "Members":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Like :meth:`aclose`; losing a counter at shutdown is logged, never raised."""
        try:
            await self.aclose()
        except Exception as exc:  # noqa: BLE001 - a lost counter must not stop a clean shutdown
            log.warning("could not write the last member cache updates: %s", exc)

    async def purge(self, *, everything: bool = False) -> int:
        """Forget answers unused for ``max_stale`` (personal data is kept no longer than it is useful), and
        remembered 404s past their time; ``everything=True`` forgets every cached answer."""
        now = time.monotonic()
        for member_id, (at, _) in list(self._not_found.items()):
            if everything or now - at >= self._settings.not_found_ttl:
                del self._not_found[member_id]
        cutoff = None if everything else time.time() - self._settings.max_stale
        return await self._writer.submit(lambda c: purge_rows(c, cutoff))
