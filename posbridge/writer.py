"""The one thread that writes to the database, and SQLite's errors as posbridge's.

Why one writer: SQLite allows one write transaction at a time, and every commit with ``synchronous=FULL`` costs
an fsync. The :class:`Writer` thread takes every write job that is waiting, runs them in one transaction and
commits once (group commit), so sixteen tills posting at once cost one fsync, not sixteen. A job's caller is
only answered after that commit has returned: what the caller is told is on disk, is on disk.

One failing job (a bug, a constraint) fails alone: a batch first runs without savepoints and, if a job
raises, is rolled back and run again with a savepoint per job, so the others still commit. A job may therefore
run twice before its one commit: it must only act on the connection it is given (every job in posbridge
does). A job may offer ``together(conn, jobs)`` (a static method, shared by its kind): consecutive jobs of one
kind in a batch are then run by one call, which must give the results running each would give, in order.

A failed COMMIT, or a statement refused for the file's sake (disk full, read-only file, I/O error), fails every
job of the batch with :class:`~posbridge.errors.StorageError`. The failure is logged at most once a minute (a
full disk fails every request); ``Writer.last_error`` holds it until a commit succeeds again.

Why it is built the way it is (README, Benchmarks): every SQLite call releases the GIL and must take it back
from a busy event loop, so a batch makes as few calls as it can (no savepoints unless a job fails), and the
answers of one batch reach the event loop in one wake-up (``call_soon_threadsafe`` once per batch, not once
per job).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
import time
from typing import Any, Callable, Optional, TypeVar, Union

from posbridge.errors import (
    StorageBusy,
    StorageCorrupt,
    StorageError,
    StorageFull,
    StorageIOError,
    StorageReadOnly,
)
from posbridge.logs import LogThrottle

log = logging.getLogger("posbridge.db")
_throttled = LogThrottle(60.0)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

#: How many waiting write jobs may share one commit.
MAX_BATCH = 256
SQLITE_READONLY = 8


class Writer:
    """The one thread that writes. ``submit`` from asyncio, ``call`` from plain threads.

    ``reopen``, when given, replaces the connection (it is given the old one to close): a file that was
    read-only when it was opened stays read-only to that connection for good, so after a write refused as
    read-only the next batch first reopens (``reopen`` returns None, closing nothing, while the files are still
    not writable).

    A job whose ``submit`` was cancelled while it waited still runs and commits (it may be running already);
    only its answer is dropped.
    """

    def __init__(self, conn: sqlite3.Connection,
                 reopen: Callable[[sqlite3.Connection], sqlite3.Connection | None] | None = None) -> None:
        self._conn = conn
        self._reopen = reopen
        self._needs_reopen = False
        self._jobs: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="posbridge-db-writer", daemon=True)
        self.commits = 0
        self.last_error: str | None = None
        self.last_error_since: float | None = None
        self.last_error_kind: str | None = None

    @property
    def connection(self) -> sqlite3.Connection:
        """The writer's connection (to close it; only the writer thread may use it while it runs)."""
        return self._conn

    def start(self) -> "Writer":
        """Start the writer thread; jobs submitted before wait for it. Returns the writer."""
        self._thread.start()
        return self

    async def submit(self, job: Job[T], *, bare: bool = False) -> T:
        """Run ``job(conn)`` inside the next group transaction; returns after COMMIT succeeded.

        ``bare=True`` runs it alone, outside any transaction (``PRAGMA wal_checkpoint`` cannot run inside
        one); its failure is the caller's and does not count as "writes failing"."""
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((job, answer, bare))
        return await answer

    def call(self, job: Job[T]) -> T:
        """Blocking form of :meth:`submit`, for threads that are not the event loop."""
        answer: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((job, answer, False))
        return answer.result()

    def close(self) -> None:
        """Finish every job already submitted, then stop the thread (nothing to do if it never started)."""
        if not self._thread.is_alive():
            return
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._maybe_reopen()
            grouped = [(job, answer) for job, answer, bare in batch if not bare]
            if len(grouped) == 1:
                _answer(self._run_alone(*grouped[0]))
            elif grouped:
                _answer(self._run_together(grouped))
            for job, answer, bare in batch:
                if bare:
                    _answer([self._run_bare(job, answer)])
            if stop:
                return

    def _maybe_reopen(self) -> None:
        if not self._needs_reopen or self._reopen is None:
            return
        try:
            fresh = self._reopen(self._conn)
        except (sqlite3.Error, OSError) as exc:
            _throttled.log(log, logging.ERROR, "cannot reopen the database for writing: %s", exc)
            return
        if fresh is None:
            return
        self._conn = fresh
        self._needs_reopen = False
        _throttled.log(log, logging.INFO, "the database files are writable again; reopened the database")

    def _run_bare(self, job: Job, answer: _Answer) -> _Outcome:
        try:
            return answer, job(self._conn), None
        except sqlite3.Error as exc:
            return answer, None, storage_error(exc)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            return answer, None, exc

    def _run_alone(self, job: Job, answer: _Answer) -> list[_Outcome]:
        """One job, one transaction: the transaction is the job's savepoint (three statements fewer)."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return self._fail_all([(job, answer)], exc)
        try:
            value = job(conn)
        except BaseException as exc:  # noqa: BLE001 - the job's failure is its caller's
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as rollback_exc:
                return self._abort([(job, answer)], rollback_exc)
            if _is_file_error(exc):  # refused for the file's sake (full, read-only...), not the job's
                return self._fail_all([(job, answer)], exc)  # type: ignore[arg-type]
            # as in a batch, where the failed job's savepoint is rolled back and the (empty) rest commits
            self._committed()
            return [(answer, None, storage_error(exc) if isinstance(exc, sqlite3.Error) else exc)]
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            return self._abort([(job, answer)], exc)
        self._committed()
        return [(answer, value, None)]

    def _run_together(self, batch: list[tuple[Job, _Answer]]) -> list[_Outcome]:
        """Every job in one transaction, without savepoints (two statements fewer per job). If a job raises,
        everything is rolled back and the batch runs again with a savepoint per job (:meth:`_run_batch`)."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return self._fail_all(batch, exc)
        values: list[Any] = []
        index = 0
        while index < len(batch):
            job = batch[index][0]
            together = getattr(job, "together", None)
            end = index + 1
            if together is not None:  # a run of jobs of one kind that can be done at once
                while end < len(batch) and getattr(batch[end][0], "together", None) is together:
                    end += 1
            try:
                if end - index > 1:
                    done = together(conn, [job for job, _ in batch[index:end]])
                    if len(done) != end - index:
                        raise RuntimeError(f"{together!r} gave {len(done)} results for {end - index} jobs")
                    values.extend(done)
                else:
                    values.append(job(conn))
                index = end
            except BaseException as exc:  # noqa: BLE001 - that job fails alone, in the second run
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error as rollback_exc:
                    return self._abort(batch, rollback_exc)
                if _is_file_error(exc):  # refused for the file's sake (full, read-only...), not the job's
                    return self._fail_all(batch, exc)  # type: ignore[arg-type]
                return self._run_batch(batch)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            return self._abort(batch, exc)
        self._committed()
        return [(answer, value, None) for (_, answer), value in zip(batch, values)]

    def _run_batch(self, batch: list[tuple[Job, _Answer]]) -> list[_Outcome]:
        """Every job in its own savepoint: one that fails is rolled back alone and the rest commit."""
        conn = self._conn
        results: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return self._fail_all(batch, exc)
        for job, answer in batch:
            try:
                conn.execute("SAVEPOINT job")  # one name for all: released before the next, one cached statement
                value = job(conn)
                conn.execute("RELEASE job")
                results.append((answer, value, None))
            except BaseException as exc:  # noqa: BLE001 - one job's failure must not sink the batch
                try:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                except sqlite3.Error as rollback_exc:
                    return self._abort(batch, rollback_exc)
                if _is_file_error(exc):  # refused for the file's sake (full, read-only...), not the job's
                    return self._abort(batch, exc)  # type: ignore[arg-type]
                results.append((answer, None, storage_error(exc) if isinstance(exc, sqlite3.Error) else exc))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            return self._abort(batch, exc)
        self._committed()
        return results

    def _committed(self) -> None:
        self.commits += 1
        if self.last_error is not None:
            log.warning("database writes work again (they failed for %.0f s: %s)",
                        time.time() - (self.last_error_since or time.time()), self.last_error)
            _throttled.reset(_WRITE_FAILED_KEY)
        self.last_error = None
        self.last_error_since = None
        self.last_error_kind = None

    def _abort(self, batch: list[tuple[Job, _Answer]], exc: sqlite3.Error) -> list[_Outcome]:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        return self._fail_all(batch, exc)

    def _fail_all(self, batch: list[tuple[Job, _Answer]], exc: sqlite3.Error) -> list[_Outcome]:
        error = storage_error(exc)
        if self.last_error is None:
            self.last_error_since = time.time()
        self.last_error = str(error)
        self.last_error_kind = error.kind
        if _is_read_only(exc):
            self._needs_reopen = True
        _throttled.log(log, logging.ERROR, "database write failed: %s", error, key=_WRITE_FAILED_KEY)
        return [(answer, None, error) for _, answer in batch]


#: Where a job's answer goes: an asyncio future (``submit``) or a thread's future (``call``).
_Answer = Union["asyncio.Future[Any]", "concurrent.futures.Future[Any]"]
#: (where the answer goes, the job's value, or the exception it ends with)
_Outcome = tuple[_Answer, Any, Optional[BaseException]]
_Item = tuple[Job, _Answer, bool]


def _answer(outcomes: list[_Outcome]) -> None:
    """Hand the outcomes of one batch to their callers: threads' futures at once, each event loop's futures in
    one ``call_soon_threadsafe`` (one wake-up of that loop for the whole batch)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        answer = outcome[0]
        if isinstance(answer, concurrent.futures.Future):
            _settle(outcome)
        else:
            by_loop.setdefault(answer.get_loop(), []).append(outcome)
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, settled)
        except RuntimeError:  # that event loop is closed: nobody is waiting any more
            pass


def _settle_all(outcomes: list[_Outcome]) -> None:
    for outcome in outcomes:
        _settle(outcome)


def _settle(outcome: _Outcome) -> None:
    answer, value, error = outcome
    if answer.done():  # the caller was cancelled while it waited
        return
    if error is None:
        answer.set_result(value)
    else:
        answer.set_exception(error)


_WRITE_FAILED_KEY = "database write failed"


#: Primary result codes that are about the file or the disk, not about one job's statement.
_FILE_ERRORS = frozenset({5, 6, 8, 10, 11, 13, 14, 26})


def _primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(exc, sqlite3.Error) and isinstance(code, int) else None


def _is_read_only(exc: BaseException) -> bool:
    return _primary_code(exc) == SQLITE_READONLY


def _is_file_error(exc: BaseException) -> bool:
    return _primary_code(exc) in _FILE_ERRORS


# SQLite's primary result codes (https://sqlite.org/rescode.html) -> (error class, what the technician does).
# The extended code's low byte is the primary code; an error without a code (raised by Python's own sqlite3
# module) is "other".
_SQLITE_CODES: dict[int, tuple[type[StorageError], str]] = {
    5: (StorageBusy, "another process holds the database lock"),                        # SQLITE_BUSY
    6: (StorageBusy, "another process holds the database lock"),                        # SQLITE_LOCKED
    8: (StorageReadOnly, "the database file, its -wal/-shm files or its directory are read-only for the "
                         "service user: chown/chmod them all"),  # SQLITE_READONLY
    10: (StorageIOError, "the disk failed a read or write; check it (`dmesg`), free space on it"),  # IOERR
    11: (StorageCorrupt, "the database file is corrupt; run `posbridge doctor`"),          # SQLITE_CORRUPT
    13: (StorageFull, "the disk is full; free space on the state directory's disk"),       # SQLITE_FULL
    14: (StorageIOError, "the database file cannot be opened; check the state directory"),  # SQLITE_CANTOPEN
    26: (StorageCorrupt, "the file is not a posbridge database; run `posbridge doctor`"),   # SQLITE_NOTADB
}


def storage_error(exc: sqlite3.Error, doing: str = "could not store") -> StorageError:
    """The :class:`StorageError` subclass for a sqlite3 exception, by SQLite's result code, with the fix."""
    code = getattr(exc, "sqlite_errorcode", None)
    error_class, hint = _SQLITE_CODES.get(code & 0xFF if isinstance(code, int) else -1,
                                          (StorageError, "see the log for details"))
    return error_class(f"{doing}: {exc} ({hint})", sqlite_code=code)
