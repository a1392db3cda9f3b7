"""Durable enqueue, in process: posbridge's outbox next to a peer and to SQLite's own floor, in one run.

    .venv/bin/python bench/enqueue.py [--quick]

Every row stores small invoices durably (WAL journal, ``synchronous=FULL``: each acknowledged item survives a
power cut) in a fresh database on the same disk, and prints items per second:

- ``Outbox.enqueue``: posbridge's own path (identity, content hash, the writer thread's group commit), with 1
  and 16 concurrent producers on one event loop, as the POST handler calls it;
- persist-queue's ``SQLiteAckQueue.put`` (the nearest durable-queue library, ``pip install '.[bench]'``) with 1
  and 16 producer threads, its connections switched to ``synchronous=FULL`` to match;
- a raw loop of one INSERT and one COMMIT per item on one thread: what a single producer cannot beat without
  giving up a commit per item.

The comparison columns are measured in the same run on the same disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from posbridge.config import InvoiceSettings  # noqa: E402
from posbridge.db import Database  # noqa: E402
from posbridge.outbox import Outbox  # noqa: E402
from tests.support.daemon import invoice  # noqa: E402


def documents(count: int, serie: str) -> list[tuple[bytes, dict]]:
    made = []
    for number in range(count):
        document = invoice(number, serie=serie)
        made.append((json.dumps(document).encode(), document))
    return made


def outbox_rate(directory: Path, count: int, producers: int) -> float:
    """Items per second through ``Outbox.enqueue`` with ``producers`` concurrent coroutines."""
    items = documents(count, f"P{producers}")

    async def run(outbox: Outbox) -> float:
        queue = iter(items)

        async def producer() -> None:
            for body, document in queue:
                await outbox.enqueue(body, "application/json", document)

        started = time.perf_counter()
        await asyncio.gather(*(producer() for _ in range(producers)))
        return count / (time.perf_counter() - started)

    with Database(directory / f"outbox-{producers}.db") as database:
        return asyncio.run(run(Outbox(database.writer, database.reader, InvoiceSettings())))


def persist_queue_rate(directory: Path, count: int, producers: int) -> float | None:
    """Items per second through persist-queue's ``SQLiteAckQueue.put`` from ``producers`` threads."""
    try:
        from persistqueue import SQLiteAckQueue
    except ImportError:
        return None
    queue = SQLiteAckQueue(str(directory / f"persist-queue-{producers}"), multithreading=True, auto_commit=True)
    for conn in {id(queue._conn): queue._conn, id(queue._putter): queue._putter}.values():
        conn.execute("PRAGMA synchronous=FULL")
    items = [document for _, document in documents(count, f"Q{producers}")]
    cursor = iter(items)
    lock = threading.Lock()

    def producer() -> None:
        while True:
            with lock:
                item = next(cursor, None)
            if item is None:
                return
            queue.put(item)

    threads = [threading.Thread(target=producer) for _ in range(producers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = count / (time.perf_counter() - started)
    queue.close()
    return rate


def raw_commit_rate(directory: Path, count: int) -> float:
    """One INSERT and one COMMIT per item, one thread, the same pragmas."""
    conn = sqlite3.connect(directory / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    bodies = [body for body, _ in documents(count, "RAW")]
    started = time.perf_counter()
    for body in bodies:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO items (body) VALUES (?)", (body,))
        conn.execute("COMMIT")
    rate = count / (time.perf_counter() - started)
    conn.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer items (a smoke run, noisier numbers)")
    args = parser.parse_args()
    count, runs = (1000, 1) if args.quick else (4000, 3)
    measures: dict[str, Callable[[Path], float | None]] = {
        "raw": lambda d: raw_commit_rate(d, count),
        "ours16": lambda d: outbox_rate(d, count, 16),
        "peer16": lambda d: persist_queue_rate(d, count, 16),
        "ours1": lambda d: outbox_rate(d, count, 1),
        "peer1": lambda d: persist_queue_rate(d, count, 1),
    }
    best: dict[str, float | None] = {name: None for name in measures}
    with tempfile.TemporaryDirectory(prefix="posbridge-bench-enqueue-", dir=str(REPO)) as temp:
        # rounds of every row, not every run of one row after the other: the machine's noise (other work on
        # its 2 cores) then falls on all rows alike; the best of the rounds is kept (noise only slows a run down)
        for _ in range(runs):
            for name, measure in measures.items():
                rate = measure(Path(tempfile.mkdtemp(dir=temp)))
                if rate is not None and (best[name] is None or rate > best[name]):  # type: ignore[operator]
                    best[name] = rate
    raw = best["raw"]
    assert raw is not None
    print(f"\nDurable enqueue ({count} invoices per run, best of {runs}; WAL + synchronous=FULL; "
          f"Python {platform.python_version()}, {platform.machine()})\n")
    print("| producers | Outbox.enqueue /s | persist-queue put /s | vs persist-queue | vs raw commit loop | target |")
    print("| --: | --: | --: | --: | --: | --- |")
    for producers, target in ((16, ">= 3x persist-queue"), (1, ">= 1x persist-queue, >= 80 % of the raw loop")):
        ours, peer = best[f"ours{producers}"], best[f"peer{producers}"]
        assert ours is not None
        versus = f"{ours / peer:.2f}x" if peer else "not installed"
        print(f"| {producers} | {ours:,.0f} | {f'{peer:,.0f}' if peer else '-'} | {versus} | {ours / raw:.0%} | "
              f"{target} |")
    print(f"| raw INSERT+COMMIT loop, 1 thread | {raw:,.0f} | | | 100% | |")
    if best["peer16"] is None:
        print("\npersist-queue is not installed: pip install -e '.[bench]'")


if __name__ == "__main__":
    main()
