"""``Members`` in this process, against the embedded sandbox cloud over real HTTP and a real SQLite file.

For what is hard to see from outside the daemon: the retry window after a failure, the probe rate, the bound
on remembered 404s, the batched counters, the purge rules. The end-to-end behaviour is in test_members.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from posbridge import members as members_mod
from posbridge.cloud import CloudClient
from posbridge.config import CloudSettings, MemberSettings
from posbridge.db import Database, Reader, Writer
from posbridge.members import MemberAnswer, Members, cache_summary, purge_rows
from posbridge.sandbox.server import EmbeddedSandbox

T = TypeVar("T")
MEMBER = "OW7K2M9Q"


@dataclass
class Rig:
    sandbox: EmbeddedSandbox
    writer: Writer
    reader: Reader

    def calls(self, member_id: str) -> int:
        return int(self.sandbox.state.requests()["by_member"].get(member_id, 0))

    def run(self, work: Callable[[Members], Awaitable[T]], *, record_stats: bool = True, **settings: Any) -> T:
        """Run ``work`` with a fresh ``Members`` on a fresh event loop, then close it (writes what is pending)."""

        async def main() -> T:
            cloud = CloudClient(CloudSettings(base_url=self.sandbox.url, account="demo"), "sbx")
            members = Members(cloud, self.writer, self.reader, MemberSettings(**{"timeout": 0.3, **settings}),
                              record_stats=record_stats)
            try:
                return await work(members)
            finally:
                await members.aclose()
                await cloud.aclose()

        return asyncio.run(main())


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with Database(tmp_path / "posbridge.db") as database, EmbeddedSandbox("sbx", "demo") as sandbox:
        yield Rig(sandbox, database.writer, database.reader)


def test_age_header_is_whole_non_negative_seconds() -> None:
    def age(value: float) -> str:
        return MemberAnswer(200, b"{}", "application/json", "stale", "stale", age=value).http_headers()["Age"]

    assert [age(0.2), age(59.99), age(3600.5), age(-3.0)] == ["0", "59", "3600", "0"]
    assert "Age" not in MemberAnswer(200, b"{}", "application/json", "fresh", "fresh").http_headers()


def test_after_a_failure_cached_members_answer_at_once_and_the_cloud_is_probed_at_most_once_a_second(rig) -> None:
    async def work(members: Members) -> tuple[float, list[float], int]:
        await members.lookup(MEMBER)
        await asyncio.sleep(0.1)  # the cache write
        rig.sandbox.state.update_faults({"latency_ms": 2000})
        started = time.monotonic()
        first = await members.lookup(MEMBER)
        waited = time.monotonic() - started
        assert first.cache == "stale"
        calls_before = rig.calls(MEMBER)
        quick = []
        for _ in range(20):
            started = time.monotonic()
            assert (await members.lookup(MEMBER)).cache == "stale"
            quick.append(time.monotonic() - started)
        await asyncio.sleep(0.05)
        return waited, quick, rig.calls(MEMBER) - calls_before

    waited, quick, probes = rig.run(work)
    # the cloud takes 2 s: the first look-up gave up at its 0.3 s timeout, the next ones did not wait on it at all
    assert 0.25 < waited < 2.0
    assert max(quick) < 1.0  # none waited on the 2 s cloud
    assert probes <= 1


def test_inside_the_retry_window_a_member_without_a_cached_answer_still_asks_the_cloud(rig) -> None:
    async def work(members: Members) -> MemberAnswer:
        rig.sandbox.state.update_faults({"error_rate": 1.0, "error_status": 503})
        assert (await members.lookup(MEMBER)).status == 503
        assert not members.cloud_reachable
        rig.sandbox.state.clear_faults()
        return await members.lookup("OW3HX8RT")

    answer = rig.run(work)
    assert (answer.status, answer.cache, answer.source) == (200, "fresh", "cloud")


def test_remembered_404s_are_bounded_oldest_forgotten_first(rig, monkeypatch) -> None:
    monkeypatch.setattr(members_mod, "NOT_FOUND_MEMORY", 3)
    cards = [f"BADCARD{n}" for n in range(5)]

    async def work(members: Members) -> None:
        for card in cards:
            assert (await members.lookup(card)).result == "not_found"
        assert (await members.lookup(cards[-1])).result == "not_found_cached"
        assert (await members.lookup(cards[0])).result == "not_found"  # forgotten: asked again

    rig.run(work)
    assert [rig.calls(card) for card in cards] == [2, 1, 1, 1, 1]


def test_a_404_forgets_the_answer_cached_for_that_member(rig) -> None:
    rig.sandbox.state.upsert_members([{"id": "GONE1234", "name": "Baja"}])

    async def work(members: Members) -> MemberAnswer:
        await members.lookup("GONE1234")
        await asyncio.sleep(0.1)
        assert rig.reader.query(lambda c: c.execute("SELECT COUNT(*) FROM members").fetchone()[0]) == 1
        rig.sandbox.state.reset()  # back to the demo members: GONE1234 no longer exists
        answer = await members.lookup("GONE1234")
        await asyncio.sleep(0.1)
        return answer

    assert rig.run(work).status == 404
    assert rig.reader.query(lambda c: c.execute("SELECT COUNT(*) FROM members").fetchone()[0]) == 0


def test_counters_are_written_in_batches_and_closing_writes_the_rest(rig, monkeypatch) -> None:
    monkeypatch.setattr(members_mod, "STATS_FLUSH_EVERY", 3600.0)  # no batch falls due during the test

    async def work(members: Members) -> dict[str, Any]:
        for _ in range(5):
            await members.lookup(MEMBER)
        await members.lookup("NOSUCH12")
        return rig.reader.query(cache_summary)

    before_close = rig.run(work)
    assert sum(before_close["counters"].values()) == 0  # six look-ups, no write of their counters yet
    after = rig.reader.query(cache_summary)
    assert after["counters"]["fresh"] == 5 and after["counters"]["not_found"] == 1
    assert after["entries"] == 1


def test_cli_lookups_are_not_counted(rig) -> None:
    async def work(members: Members) -> None:
        await members.lookup(MEMBER)

    rig.run(work, record_stats=False)
    assert sum(rig.reader.query(cache_summary)["counters"].values()) == 0


def test_purge_removes_answers_unused_or_fetched_before_the_cutoff_and_keeps_the_rest(rig) -> None:
    now = time.time()
    rows = [("RECENT01", 200, now - 10, now - 5), ("UNUSED01", 200, now - 100, now - 100),
            ("OLDBUT01", 200, now - 100, now - 1), ("NOTOK001", 404, now - 1, now - 1)]
    rig.writer.call(lambda c: c.executemany(
        "INSERT INTO members (member_id, status, body, content_type, fetched_at, last_used_at)"
        " VALUES (?, ?, x'7b7d', 'application/json', ?, ?)", rows))
    assert rig.writer.call(lambda c: purge_rows(c, now - 50)) == 3
    assert rig.reader.query(lambda c: [r[0] for r in c.execute("SELECT member_id FROM members")]) == ["RECENT01"]
    assert rig.writer.call(lambda c: purge_rows(c, None)) == 1
