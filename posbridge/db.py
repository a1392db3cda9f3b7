"""The SQLite database: connections, pragmas, schema migrations, and the open :class:`Database` (the one
:class:`~posbridge.writer.Writer`, which group-commits every write, and a :class:`Reader`).

Durability of the file system entries: every directory :func:`open_database` creates, and the database file
itself, is followed by an fsync of its parent directory, so a power cut cannot take the directory or the file
away after the daemon started using them (SQLite makes its own ``-wal`` durable the same way).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import sqlite_utils

from posbridge.errors import StorageError
from posbridge.writer import Job, T, Writer, storage_error

__all__ = ["Database", "Reader", "Writer", "connect", "file_id", "fsync_directory", "make_directories",
           "migrate", "now", "open_database", "read_identity", "storage_error", "wal_path"]

log = logging.getLogger(__name__)

#: After a checkpoint the WAL is cut back to this size, so one burst does not keep its space for good.
WAL_SIZE_LIMIT = 4 * 1024 * 1024
#: Prepared statements kept per connection (Python's default is 128).
STATEMENT_CACHE = 512


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with posbridge's pragmas: WAL journal, ``synchronous=FULL``, a 5 s busy timeout."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False,
                               isolation_level=None)
    else:
        # the writer's multi-row INSERTs are one statement per batch size (outbox.py): keep them all prepared
        conn = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False, isolation_level=None,
                               cached_statements=STATEMENT_CACHE)
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



def _v5_database_identity(db: sqlite_utils.Database) -> None:
    """Which database this is (a random id, made once) and the highest invoice id it has held (``high_water``,
    kept by the daemon; purging old invoices does not lower it). The marker beside the state directory
    (posbridge/marker.py) records the same, so a start on an empty, replaced or rolled-back file is noticed.
    ``checked_at`` is what the daemon's write probe updates while writes are failing."""
    db["database_identity"].create({"id": str, "created_at": float, "high_water": int, "checked_at": float},
                                   pk="id", not_null={"created_at", "high_water"})
    db.execute("INSERT INTO database_identity (id, created_at, high_water, checked_at)"
               " VALUES (?, ?, (SELECT COALESCE(MAX(id), 0) FROM invoices), ?)",
               [uuid.uuid4().hex, time.time(), time.time()])



MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1_outbox, _v2_member_cache, _v3_member_stats, _v4_invoice_identity, _v5_database_identity]
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


def file_id(path: str | Path) -> FileId | None:
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
        self.reopening = False
        self.writer = Writer(conn, reopen=self._reopen).start()

    def _reopen(self, old: sqlite3.Connection) -> sqlite3.Connection | None:
        """A new write connection once the files can be written again (None while they cannot). The read
        connection is reopened too: SQLite shares one ``-shm`` mapping between the connections of a process,
        and it stays read-only until every connection that opened it read-only is closed."""
        if file_id(self.path) != self.file_id:
            return None  # not the file opened any more: the guard reports it; reopening would hide it
        companions = [self.path.with_name(self.path.name + suffix) for suffix in ("-wal", "-shm")]
        for path in [self.path, self.path.parent, *[p for p in companions if p.exists()]]:
            if not os.access(path, os.W_OK):
                return None
        fresh: list[sqlite3.Connection] = []
        self.reopening = True  # closing every connection may make SQLite start a new -wal: not a lost one
        try:
            self.reader.reconnect(lambda: (old.close(), fresh.append(connect(self.path))))
            self.wal_id = file_id(wal_path(self.path))
        finally:
            self.reopening = False
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
