"""The SQLite database: connections, pragmas, schema migrations and the single writer.

Why one writer: SQLite allows one write transaction at a time, and every commit with ``synchronous=FULL`` costs
an fsync. The :class:`Writer` thread takes every write job that is waiting, runs them in one transaction and
commits once (group commit), so sixteen tills posting at once cost one fsync, not sixteen. A job's caller is
only answered after that commit has returned: what the caller is told is on disk, is on disk.

Each job runs inside its own savepoint, so one failing job (a bug, a constraint) fails alone; a failed COMMIT
(disk full, read-only file, I/O error) fails every job of the batch with :class:`StorageError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

import sqlite_utils

from posbridge.errors import (
    StorageBusy,
    StorageCorrupt,
    StorageError,
    StorageFull,
    StorageIOError,
    StorageReadOnly,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

#: How many waiting write jobs may share one commit.
MAX_BATCH = 256


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with posbridge's pragmas: WAL journal, ``synchronous=FULL``, a 5 s busy timeout."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False,
                               isolation_level=None)
    else:
        conn = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _create_private(path: Path) -> None:
    """Create the directory and an empty database file readable by the service user only (0600):
    it holds invoices and cached personal data."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


# --- migrations -----------------------------------------------------------------------------------------
# Each entry upgrades the schema by one version; PRAGMA user_version records how far a file has come.


def _v1_outbox(db: sqlite_utils.Database) -> None:
    db["invoices"].create(
        {
            "id": int,
            "key": str,
            "body": bytes,
            "content_type": str,
            "body_sha256": str,
            "member_id": str,
            "amount": float,
            "state": str,
            "received_at": float,
            "attempts": int,
            "next_attempt_at": float,
            "last_attempt_at": float,
            "last_error": str,
            "cloud_status": int,
            "cloud_body": bytes,
            "cloud_content_type": str,
            "sent_at": float,
            "acked_with_cloud_answer": int,
        },
        pk="id",
        not_null={"key", "body", "content_type", "state", "received_at", "attempts", "next_attempt_at"},
        defaults={"attempts": 0, "acked_with_cloud_answer": 0},
    )
    db["invoices"].create_index(["key"], unique=True)
    db["invoices"].create_index(["state", "next_attempt_at"])


def _v2_member_cache(db: sqlite_utils.Database) -> None:
    db["members"].create(
        {
            "member_id": str,
            "status": int,
            "body": bytes,
            "content_type": str,
            "fetched_at": float,
            "last_used_at": float,
        },
        pk="member_id",
        not_null={"status", "body", "fetched_at", "last_used_at"},
    )
    db["members"].create_index(["last_used_at"])


def _v3_member_stats(db: sqlite_utils.Database) -> None:
    """Look-up counters of the member cache (fresh, stale, miss, ...), so `posbridge members cache` can show
    what the daemon saw. One row per counter; the daemon adds its deltas in batches (see members.py)."""
    db["member_stats"].create({"name": str, "value": int, "updated_at": float}, pk="name",
                              not_null={"value"}, defaults={"value": 0})


def _v4_invoice_identity(db: sqlite_utils.Database) -> None:
    """Which sale a row is (``identity``, see posbridge.invoice) apart from the key it is delivered under, the
    hash of its canonical JSON (``content_sha256``) to tell a re-post from a different sale under the same
    identity, and the row a held conflict collides with (``conflict_of``). Rows stored before this version get
    their identity and hash from their own body when the daemon starts (``Outbox.fill_identities``): their
    ``key``, already sent as ``Idempotency-Key``, never changes."""
    table = db["invoices"]
    table.add_column("identity", str)
    table.add_column("content_sha256", str)
    table.add_column("conflict_of", int)
    table.create_index(["identity"])


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1_outbox, _v2_member_cache, _v3_member_stats, _v4_invoice_identity]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; returns the version. A file from a newer posbridge is refused."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"the database was written by a newer posbridge (schema {version}, this one knows {SCHEMA_VERSION}); "
            "upgrade posbridge instead of downgrading"
        )
    db = sqlite_utils.Database(conn)
    for number in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[number](db)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("database schema upgraded to version %d", number + 1)
    return SCHEMA_VERSION


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating if needed, mode 0600) and migrate the database; errors name the file and the fix."""
    try:
        _create_private(path)
        conn = connect(path)
        conn.execute("PRAGMA quick_check").fetchone()
        migrate(conn)
        return conn
    except sqlite3.Error as exc:
        raise storage_error(exc, f"cannot open the database {path}") from exc
    except OSError as exc:
        raise StorageError(f"cannot create the database {path}: {exc.strerror or exc}") from exc


class Writer:
    """The one thread that writes. ``submit`` from asyncio, ``call`` from plain threads."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._jobs: queue.SimpleQueue[tuple[Job, concurrent.futures.Future] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="posbridge-db-writer", daemon=True)
        self.commits = 0
        self.last_error: str | None = None

    def start(self) -> "Writer":
        """Start the writer thread; jobs submitted before wait for it. Returns the writer."""
        self._thread.start()
        return self

    async def submit(self, job: Job[T]) -> T:
        """Run ``job(conn)`` inside the next group transaction; returns after COMMIT succeeded."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((job, future))
        return await asyncio.wrap_future(future)

    def call(self, job: Job[T]) -> T:
        """Blocking form of :meth:`submit`, for threads that are not the event loop."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((job, future))
        return future.result()

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
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[tuple[Job, concurrent.futures.Future]]) -> None:
        conn = self._conn
        results: list[tuple[concurrent.futures.Future, object, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._fail_all(batch, exc)
            return
        for index, (job, future) in enumerate(batch):
            savepoint = f"job{index}"
            try:
                conn.execute(f"SAVEPOINT {savepoint}")
                value = job(conn)
                conn.execute(f"RELEASE {savepoint}")
                results.append((future, value, None))
            except BaseException as exc:  # noqa: BLE001 - one job's failure must not sink the batch
                try:
                    conn.execute(f"ROLLBACK TO {savepoint}")
                    conn.execute(f"RELEASE {savepoint}")
                except sqlite3.Error as rollback_exc:
                    self._abort(batch, rollback_exc)
                    return
                results.append((future, None, exc))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._abort(batch, exc)
            return
        self.commits += 1
        self.last_error = None
        for future, value, error in results:
            if error is None:
                future.set_result(value)
            elif isinstance(error, sqlite3.Error):
                future.set_exception(storage_error(error))
            else:
                future.set_exception(error)

    def _abort(self, batch: list[tuple[Job, concurrent.futures.Future]], exc: sqlite3.Error) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self._fail_all(batch, exc)

    def _fail_all(self, batch: list[tuple[Job, concurrent.futures.Future]], exc: sqlite3.Error) -> None:
        error = storage_error(exc)
        self.last_error = str(error)
        log.error("database write failed: %s", error)
        for _, future in batch:
            if not future.done():
                future.set_exception(error)


# SQLite's primary result codes (https://sqlite.org/rescode.html) -> (error class, what the technician does).
# The extended code's low byte is the primary code; an error without a code (raised by Python's own sqlite3
# module) is "other".
_SQLITE_CODES: dict[int, tuple[type[StorageError], str]] = {
    5: (StorageBusy, "another process holds the database lock"),                        # SQLITE_BUSY
    6: (StorageBusy, "another process holds the database lock"),                        # SQLITE_LOCKED
    8: (StorageReadOnly, "the database file or its directory is read-only for the service user"),  # READONLY
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


class Reader:
    """A read connection for the event loop's queries, used from worker threads one at a time."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path)
        self._lock = threading.Lock()

    def query(self, job: Job[T]) -> T:
        with self._lock:
            try:
                return job(self._conn)
            except sqlite3.Error as exc:
                raise storage_error(exc, "could not read") from exc

    async def run(self, job: Job[T]) -> T:
        return await asyncio.to_thread(self.query, job)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def now() -> float:
    """Wall-clock seconds; one place so tests and code agree on the clock used in the database."""
    return time.time()


class Database:
    """The open database: its connection, the one :class:`Writer` and a :class:`Reader`.

    What the daemon and every command that reads or writes the database share, so they open it the same way
    (created 0600 if missing, checked, migrated). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = open_database(path)
        try:
            self.reader = Reader(path)
        except sqlite3.Error as exc:
            self._conn.close()
            raise storage_error(exc, f"cannot open the database {path}") from exc
        self.writer = Writer(self._conn).start()

    def close(self) -> None:
        """Finish the writes already submitted, then close every connection. Blocking."""
        self.writer.close()
        self.reader.close()
        self._conn.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
