"""The SQLite database: connections, pragmas, schema migrations and the single writer.

Why one writer: SQLite allows one write transaction at a time, and every commit with ``synchronous=FULL`` costs
an fsync. The :class:`Writer` thread takes every write job that is waiting, runs them in one transaction and
commits once (group commit), so sixteen tills posting at once cost one fsync, not sixteen. A job's caller is
only answered after that commit has returned: what the caller is told is on disk, is on disk.

Each job runs inside its own savepoint, so one failing job (a bug, a constraint) fails alone; a failed COMMIT
(disk full, read-only file, I/O error) fails every job of the batch with :class:`StorageError`. The failure is
logged at most once a minute (a full disk fails every request); ``Writer.last_error`` holds it until a commit
succeeds again.

Durability of the file system entries: every directory :func:`open_database` creates, and the database file
itself, is followed by an fsync of its parent directory, so a power cut cannot take the directory or the file
away after the daemon started using them (SQLite makes its own ``-wal`` durable the same way).
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
import uuid
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
from posbridge.logs import LogThrottle

log = logging.getLogger(__name__)
_throttled = LogThrottle(60.0)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

#: How many waiting write jobs may share one commit.
MAX_BATCH = 256
#: After a checkpoint the WAL is cut back to this size, so one burst does not keep its space for good.
WAL_SIZE_LIMIT = 4 * 1024 * 1024
SQLITE_READONLY = 8


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
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (a file or directory just created in it) survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directories(directory: Path, mode: int = 0o750) -> None:
    """``mkdir -p`` whose result survives a power cut: each directory created is followed by an fsync of its
    parent (the parent holds the new entry). Directories that exist already are left alone."""
    missing: list[Path] = []
    current = directory
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=mode)
        except FileExistsError:
            continue
        fsync_directory(created.parent)


def _create_private(path: Path) -> None:
    """Create the directory and an empty database file readable by the service user only (0600): it holds
    invoices and cached personal data. Both are made durable (see the module docstring)."""
    make_directories(path.parent)
    if not path.exists():
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(path.parent)


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


def _v4_database_identity(db: sqlite_utils.Database) -> None:
    """Which database this is (a random id, made once) and the highest invoice id it has held (``high_water``,
    kept by the daemon; purging old invoices does not lower it). The marker beside the state directory
    (posbridge/marker.py) records the same, so a start on an empty, replaced or rolled-back file is noticed.
    ``checked_at`` is what the daemon's write probe updates while writes are failing."""
    db["database_identity"].create({"id": str, "created_at": float, "high_water": int, "checked_at": float},
                                   pk="id", not_null={"created_at", "high_water"})
    db.execute("INSERT INTO database_identity (id, created_at, high_water, checked_at)"
               " VALUES (?, ?, (SELECT COALESCE(MAX(id), 0) FROM invoices), ?)",
               [uuid.uuid4().hex, time.time(), time.time()])


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1_outbox, _v2_member_cache, _v3_member_stats,
                                                             _v4_database_identity]
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
    """The one thread that writes. ``submit`` from asyncio, ``call`` from plain threads.

    ``reopen``, when given, replaces the connection (it is given the old one to close): a file that was
    read-only when it was opened stays read-only to that connection for good, so after a write refused as
    read-only the next batch first reopens (``reopen`` returns None, closing nothing, while the files are still
    not writable).
    """

    def __init__(self, conn: sqlite3.Connection,
                 reopen: Callable[[sqlite3.Connection], sqlite3.Connection | None] | None = None) -> None:
        self._conn = conn
        self._reopen = reopen
        self._needs_reopen = False
        self._jobs: queue.SimpleQueue[tuple[Job, concurrent.futures.Future, bool] | None] = queue.SimpleQueue()
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
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((job, future, bare))
        return await asyncio.wrap_future(future)

    def call(self, job: Job[T]) -> T:
        """Blocking form of :meth:`submit`, for threads that are not the event loop."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((job, future, False))
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
            self._maybe_reopen()
            grouped = [(job, future) for job, future, bare in batch if not bare]
            if grouped:
                self._run_batch(grouped)
            for job, future, bare in batch:
                if bare:
                    self._run_bare(job, future)
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

    def _run_bare(self, job: Job, future: concurrent.futures.Future) -> None:
        try:
            value = job(self._conn)
        except sqlite3.Error as exc:
            future.set_exception(storage_error(exc))
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            future.set_exception(exc)
        else:
            future.set_result(value)

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
                if _is_file_error(exc):  # refused for the file's sake (full, read-only...), not the job's
                    self._abort(batch, exc)  # type: ignore[arg-type]
                    return
                results.append((future, None, exc))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._abort(batch, exc)
            return
        self.commits += 1
        if self.last_error is not None:
            log.warning("database writes work again (they failed for %.0f s: %s)",
                        time.time() - (self.last_error_since or time.time()), self.last_error)
            _throttled.reset(_WRITE_FAILED_KEY)
        self.last_error = None
        self.last_error_since = None
        self.last_error_kind = None
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
        if self.last_error is None:
            self.last_error_since = time.time()
        self.last_error = str(error)
        self.last_error_kind = error.kind
        if _is_read_only(exc):
            self._needs_reopen = True
        _throttled.log(log, logging.ERROR, "database write failed: %s", error, key=_WRITE_FAILED_KEY)
        for _, future in batch:
            if not future.done():
                future.set_exception(error)


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


class Reader:
    """A read connection for the event loop's queries, used from worker threads one at a time."""

    def __init__(self, path: Path) -> None:
        self._path = path
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

    def reconnect(self, meanwhile: Callable[[], object]) -> None:
        """Close the connection, run ``meanwhile`` (no query runs in between), open a new one."""
        with self._lock:
            self._conn.close()
            try:
                meanwhile()
            finally:
                self._conn = connect(self._path)


def now() -> float:
    """Wall-clock seconds; one place so tests and code agree on the clock used in the database."""
    return time.time()


FileId = tuple[int, int]


def file_id(path: Path) -> FileId | None:
    """``(device, inode)`` of ``path``, or None when there is nothing there."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


class Database:
    """The open database: its connection, the one :class:`Writer` and a :class:`Reader`.

    What the daemon and every command that reads or writes the database share, so they open it the same way
    (created 0600 if missing, checked, migrated). Use as a context manager, or call :meth:`close`.

    ``file_id`` and ``wal_id`` are the inodes opened, so a watcher can tell when the path no longer leads to
    the file in use (deleted or replaced underneath the running daemon).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        conn = open_database(path)
        try:
            self.reader = Reader(path)
            self.database_id = read_identity(conn)[0]
        except sqlite3.Error as exc:
            conn.close()
            raise storage_error(exc, f"cannot open the database {path}") from exc
        self.file_id = file_id(path)
        self.wal_id = file_id(wal_path(path))
        self.writer = Writer(conn, reopen=self._reopen).start()

    def _reopen(self, old: sqlite3.Connection) -> sqlite3.Connection | None:
        """A new write connection once the files can be written again (None while they cannot). The read
        connection is reopened too: SQLite shares one ``-shm`` mapping between the connections of a process,
        and it stays read-only until every connection that opened it read-only is closed."""
        companions = [self.path.with_name(self.path.name + suffix) for suffix in ("-wal", "-shm")]
        for path in [self.path, self.path.parent, *[p for p in companions if p.exists()]]:
            if not os.access(path, os.W_OK):
                return None
        fresh: list[sqlite3.Connection] = []
        self.reader.reconnect(lambda: (old.close(), fresh.append(connect(self.path))))
        return fresh[0]

    def close(self) -> None:
        """Finish the writes already submitted, then close every connection. Blocking."""
        self.writer.close()
        self.reader.close()
        self.writer.connection.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def read_identity(conn: sqlite3.Connection) -> tuple[str | None, int]:
    """``(database id, high water)`` of an open database: the id made by the identity migration (None in a
    file from before it) and the highest invoice id it has held."""
    try:
        row = conn.execute("SELECT id, high_water FROM database_identity LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        row = None
    try:
        top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM invoices").fetchone()[0]
    except sqlite3.OperationalError:
        top = 0
    if row is None:
        return None, int(top)
    return row[0], max(int(row[1] or 0), int(top))
