"""The writer's batches and the outbox's batched writes, in this process against a real SQLite file.

What the speed work (README, Benchmarks) must not change: a job that fails fails alone, a caller that gives up
does not stop the writer, invoices stored together are returned exactly as the database holds them and follow
the identity rules as if stored one by one, outcomes that share a commit are each recorded, and a delivery slot
freed before its outcome is written never lets the invoice be sent twice.

To make jobs share a batch, the writer is first held by a job that waits on an event: everything submitted
meanwhile is waiting together when it is let go.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from posbridge.cloud import CloudClient
from posbridge.config import CloudSettings, DeliverySettings, InvoiceSettings
from posbridge.db import Database
from posbridge.outbox import Outbox
from posbridge.replay import Replayer
from posbridge.sandbox.server import EmbeddedSandbox


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    with Database(tmp_path / "posbridge.db") as opened:
        yield opened


class Hold:
    """Holds the writer thread until released (a job that waits), so what is submitted meanwhile batches."""

    def __init__(self, database: Database) -> None:
        self.release = threading.Event()
        self.holding = threading.Event()
        self._database = database

    async def __aenter__(self) -> "Hold":
        self._task = asyncio.ensure_future(self._database.writer.submit(self._wait))
        await asyncio.to_thread(self.holding.wait, 10)
        return self

    def _wait(self, conn: sqlite3.Connection) -> None:
        self.holding.set()
        self.release.wait(30)

    async def __aexit__(self, *exc_info: object) -> None:
        self.release.set()
        await self._task


def sale(number: int, **extra: object) -> tuple[bytes, dict]:
    document = {"Serie": "W", "Number": number, "Totals": {"GrossAmount": 5}, **extra}
    return json.dumps(document).encode(), document


def enqueue(outbox: Outbox, number: int, **options: float):
    body, document = sale(number)
    return outbox.enqueue(body, "application/json", document, **options)


def test_a_failing_job_fails_alone_and_the_rest_of_its_batch_commits(database: Database) -> None:
    writer = database.writer
    writer.call(lambda c: c.execute("CREATE TABLE notes (text TEXT NOT NULL)"))

    def note(text: str):
        return lambda conn: conn.execute("INSERT INTO notes VALUES (?)", (text,)).rowcount

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO notes VALUES ('from the broken job')")
        raise ValueError("a bug in one job")

    async def main() -> list[object]:
        async with Hold(database):
            jobs = [writer.submit(note("first")), writer.submit(broken), writer.submit(note("last"))]
            await asyncio.sleep(0.05)
        return await asyncio.gather(*jobs, return_exceptions=True)

    first, failed, last = asyncio.run(main())
    assert (first, last) == (1, 1)
    assert isinstance(failed, ValueError)
    notes = [row[0] for row in database.reader.query(lambda c: c.execute("SELECT text FROM notes").fetchall())]
    assert sorted(notes) == ["first", "last"]


def test_a_caller_that_gives_up_does_not_stop_the_writer_and_its_write_still_commits(database: Database) -> None:
    writer = database.writer
    writer.call(lambda c: c.execute("CREATE TABLE notes (text TEXT NOT NULL)"))

    async def main() -> int:
        async with Hold(database):
            abandoned = asyncio.ensure_future(writer.submit(lambda c: c.execute("INSERT INTO notes VALUES ('x')")))
            await asyncio.sleep(0.05)
            abandoned.cancel()
        return await writer.submit(lambda c: c.execute("SELECT COUNT(*) FROM notes").fetchone()[0])

    assert asyncio.run(main()) == 1


def test_invoices_stored_together_are_returned_as_the_database_holds_them(database: Database) -> None:
    outbox = Outbox(database.writer, database.reader, InvoiceSettings())

    async def main() -> list:
        async with Hold(database):
            waiting = [enqueue(outbox, number) for number in range(12)]
            await asyncio.sleep(0.05)
        return await asyncio.gather(*waiting)

    results = asyncio.run(main())
    assert [result.result for result in results] == ["stored"] * 12
    assert len({result.invoice.id for result in results}) == 12
    for result in results:
        assert result.invoice == outbox.get(result.invoice.id)
    assert [result.invoice.key for result in results] == [f"doc:Serie=W;Number={n}" for n in range(12)]


def test_the_same_sale_twice_in_one_batch_is_stored_once_and_a_different_one_is_held(database: Database) -> None:
    outbox = Outbox(database.writer, database.reader, InvoiceSettings())
    body, document = sale(1)
    other_body, other_document = sale(1, Totals={"GrossAmount": 9})  # same number, other content

    async def main() -> list:
        async with Hold(database):
            waiting = [outbox.enqueue(body, "application/json", document),
                       enqueue(outbox, 2),
                       outbox.enqueue(body, "application/json", document),
                       outbox.enqueue(other_body, "application/json", other_document)]
            await asyncio.sleep(0.05)
        return await asyncio.gather(*waiting)

    first, second, again, other = asyncio.run(main())
    assert (first.result, second.result, again.result, other.result) == ("stored", "stored", "duplicate", "conflict")
    assert again.invoice.id == first.invoice.id
    assert other.invoice.state == "held" and other.invoice.conflict_of == first.invoice.id
    assert outbox.stats()["depth"] == {"pending": 2, "sent": 0, "rejected": 0, "held": 1}


def test_sent_outcomes_that_linger_share_one_commit_and_each_is_recorded(database: Database) -> None:
    outbox = Outbox(database.writer, database.reader, InvoiceSettings())

    async def main() -> list[int]:
        stored = [await enqueue(outbox, number) for number in range(5)]
        before = database.writer.commits
        await asyncio.gather(*(outbox.mark_sent(result.invoice.id, 200, b"{}", "application/json", linger=0.05)
                               for result in stored))
        return [database.writer.commits - before, *(result.invoice.id for result in stored)]

    commits, *ids = asyncio.run(main())
    assert commits == 1
    assert [outbox.get(invoice_id).state for invoice_id in ids] == ["sent"] * 5


def test_a_slot_is_free_once_the_cloud_answered_yet_the_invoice_is_not_sent_again_before_it_is_recorded(
        database: Database) -> None:
    """Concurrency 1 and a writer held up: the second invoice goes out while the first one's outcome waits."""
    outbox = Outbox(database.writer, database.reader, InvoiceSettings())
    settings = DeliverySettings(concurrency=1, backoff_base=0.2, backoff_cap=1.0, poll_interval=0.05)

    async def main(sandbox: EmbeddedSandbox) -> None:
        cloud = CloudClient(CloudSettings(base_url=sandbox.url, account="demo"), "sbx")
        replayer = Replayer(outbox, cloud, settings, writes_failing=lambda: database.writer.last_error)
        due = time.time() + 0.5
        for number in (1, 2):
            await enqueue(outbox, number, not_before=due)
        stop = asyncio.Event()
        commits = database.writer.commits
        task = asyncio.create_task(replayer.run(stop))
        try:
            while database.writer.commits == commits:  # its start-up purge, before the writer is held
                await asyncio.sleep(0.01)
            async with Hold(database):
                deadline = time.monotonic() + 20
                while len(sandbox.state.invoices()) < 2:
                    assert time.monotonic() < deadline, "the second invoice waited for the first one's commit"
                    await asyncio.sleep(0.02)
                assert outbox.stats()["depth"]["sent"] == 0  # nothing recorded yet: the writer is held
                await asyncio.sleep(0.3)  # a few rounds of the delivery loop with both outcomes unrecorded
            deadline = time.monotonic() + 20
            while outbox.stats()["depth"]["sent"] < 2:
                assert time.monotonic() < deadline, "outcomes not recorded"
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await task
            await cloud.aclose()
        assert {entry["key"]: entry["deliveries"] for entry in sandbox.state.invoices()} == {"W-1": 1, "W-2": 1}

    with EmbeddedSandbox("sbx", "demo") as sandbox:
        asyncio.run(main(sandbox))


def test_an_invoice_delivered_inline_is_not_sent_again_from_what_was_read_ahead(database: Database) -> None:
    """Concurrency 1 and a slow cloud: invoices 2 and 3 wait in the read-ahead while 1 is sent; 3 is meanwhile
    delivered inline (as a POS's POST does). The delivery loop must not send 3 a second time."""
    outbox = Outbox(database.writer, database.reader, InvoiceSettings())
    settings = DeliverySettings(concurrency=1, backoff_base=0.2, backoff_cap=1.0, poll_interval=0.05)

    async def main(sandbox: EmbeddedSandbox) -> None:
        cloud = CloudClient(CloudSettings(base_url=sandbox.url, account="demo"), "sbx")
        replayer = Replayer(outbox, cloud, settings, writes_failing=lambda: database.writer.last_error)
        stored = [(await enqueue(outbox, number)).invoice for number in (1, 2, 3)]
        stop = asyncio.Event()
        task = asyncio.create_task(replayer.run(stop))
        try:
            deadline = time.monotonic() + 20
            while sandbox.state.requests()["invoices"] < 1:  # invoice 1 is out, so 2 and 3 were read ahead
                assert time.monotonic() < deadline, "invoice 1 never went out"
                await asyncio.sleep(0.01)
            assert replayer.claim(stored[2].id)  # as the POST handler claims its invoice before the inline attempt
            outcome = await replayer.deliver(stored[2])
            assert outcome.result == "sent"
            deadline = time.monotonic() + 20
            while outbox.stats()["depth"]["sent"] < 3:
                assert time.monotonic() < deadline, "invoices 1 and 2 not delivered"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # a few more rounds of the delivery loop, with 3 still read ahead if it were
        finally:
            stop.set()
            await task
            await cloud.aclose()
        assert {entry["key"]: entry["deliveries"] for entry in sandbox.state.invoices()} == {
            "W-1": 1, "W-2": 1, "W-3": 1}

    with EmbeddedSandbox("sbx", "demo", faults={"latency_ms": 300}) as sandbox:
        asyncio.run(main(sandbox))
