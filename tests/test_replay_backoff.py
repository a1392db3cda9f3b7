"""The replayer in this process, against the embedded sandbox cloud over real HTTP and a real SQLite file, for
what cannot be provoked from outside the daemon any more: an exception nobody planned for in the middle of an
attempt (the ``Retry-After: ²`` crash was one; parsing is strict now). A bug must cost a backoff, not a loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from posbridge.cloud import CloudAnswer, CloudClient
from posbridge.config import CloudSettings, DeliverySettings, InvoiceSettings
from posbridge.db import Database
from posbridge.errors import StorageFull
from posbridge.outbox import Outbox
from posbridge.replay import Replayer
from posbridge.sandbox.server import EmbeddedSandbox


class BuggyCloudClient(CloudClient):
    """The real client, with a bug switched on: every delivery raises before it is sent."""

    broken = True
    calls = 0

    async def post_invoice(self, body: bytes, content_type: str, key: str,
                           *, timeout: float | None = None) -> CloudAnswer:
        self.calls += 1
        if self.broken:
            raise ValueError("invalid literal for int() with base 10: '²'")
        return await super().post_invoice(body, content_type, key, timeout=timeout)


async def _wait(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_an_unexpected_exception_in_an_attempt_backs_off_like_a_failed_attempt(tmp_path: Path) -> None:
    settings = DeliverySettings(backoff_base=0.2, backoff_cap=1.0, poll_interval=0.1)

    async def main(database: Database, sandbox: EmbeddedSandbox) -> None:
        cloud = BuggyCloudClient(CloudSettings(base_url=sandbox.url, account="demo"), "sbx")
        outbox = Outbox(database.writer, database.reader, InvoiceSettings())
        replayer = Replayer(outbox, cloud, settings, writes_failing=lambda: database.writer.last_error)
        for number in range(1, 4):
            document = {"Serie": "B", "Number": number, "Totals": {"GrossAmount": 5}}
            await outbox.enqueue(json.dumps(document).encode(), "application/json", document)
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(replayer.run(stop))
        try:
            await _wait(lambda: cloud.calls >= 9)
            elapsed = time.monotonic() - started
            assert cloud.calls <= 3 + 15 * elapsed, (cloud.calls, elapsed)  # a loop makes hundreds a second
            stored = outbox.list("pending")
            assert all("internal error during delivery (ValueError" in (i.last_error or "") for i in stored)
            assert all(i.attempts >= 1 for i in stored)
            cloud.broken = False
            await _wait(lambda: outbox.stats()["depth"]["sent"] == 3)
        finally:
            stop.set()
            await task
            await cloud.aclose()
        assert {entry["key"]: entry["accepted"] for entry in sandbox.state.invoices()} == {
            "B-1": 1, "B-2": 1, "B-3": 1}

    with Database(tmp_path / "posbridge.db") as database, EmbeddedSandbox("sbx", "demo") as sandbox:
        asyncio.run(main(database, sandbox))


class RefusingOutbox(Outbox):
    """The real outbox, whose database refuses the first ``refusals`` outcome writes (a full disk, briefly)."""

    refusals = 1

    async def mark_rejected(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if self.refusals > 0:
            self.refusals -= 1
            raise StorageFull("could not store: database or disk is full")
        await super().mark_rejected(*args, **kwargs)


def test_a_refusal_the_database_would_not_take_is_written_once_it_can(tmp_path: Path) -> None:
    """The kept write runs after the attempt that made it is over: it must carry the cloud's answer with it."""
    settings = DeliverySettings(backoff_base=0.2, backoff_cap=1.0, poll_interval=0.1)

    async def main(database: Database, sandbox: EmbeddedSandbox) -> None:
        cloud = CloudClient(CloudSettings(base_url=sandbox.url, account="demo"), "sbx")
        outbox = RefusingOutbox(database.writer, database.reader, InvoiceSettings())
        replayer = Replayer(outbox, cloud, settings, writes_failing=lambda: database.writer.last_error)
        document = {"Serie": "R", "Number": 1, "Totals": {"GrossAmount": "twelve"}}  # the sandbox answers 422
        await outbox.enqueue(json.dumps(document).encode(), "application/json", document)
        stop = asyncio.Event()
        task = asyncio.create_task(replayer.run(stop))
        try:
            await _wait(lambda: outbox.stats()["depth"]["rejected"] == 1)
        finally:
            stop.set()
            await task
            await cloud.aclose()
        (rejected,) = outbox.list("rejected")
        assert rejected.cloud_status == 422 and b"unreadable_invoice" in (rejected.cloud_body or b"")
        assert sandbox.state.invoices()[0]["deliveries"] == 1  # kept in memory meanwhile, not sent again

    with Database(tmp_path / "posbridge.db") as database, EmbeddedSandbox("sbx", "demo") as sandbox:
        asyncio.run(main(database, sandbox))
