"""Guarding the database while the daemon runs: what SQLite itself cannot notice or fix.

- **Lost**: the database file (or its ``-wal``) deleted or replaced under the running daemon. SQLite goes on
  writing into the open, unlinked file, and the next start would find nothing. The guard compares the path's
  inode with the one opened, on every invoice and every second. Once lost: new invoices are refused (503),
  ``/readyz`` is not ready, a CRITICAL line says what happened and what to do, delivery goes on from the open
  file, and a copy of it is saved beside the marker (refreshed at stop), so nothing acknowledged is lost.
- **Low disk**: below ``[storage] min_free_bytes`` new invoices are refused early, while delivery goes on so
  the queue drains; the WAL is checkpointed and cut back so it does not keep space the outbox needs.
- **Writes failing** (disk full, read-only file): ``/readyz`` is not ready and a small write is tried with
  backoff, so acknowledging resumes by itself once the disk has space or the file is writable again.
- **The marker** (:mod:`posbridge.marker`) is kept up to date (at most every ``MARKER_EVERY`` seconds, when
  something changed), so a later start on an empty or replaced file is refused.

What callers may rely on: :meth:`DatabaseGuard.admit` is cheap (a few ``stat`` calls) and raises
:class:`~posbridge.errors.StorageLost` / :class:`~posbridge.errors.StorageLow` when no invoice may be taken;
:meth:`ready_problem` says why the bridge is not ready, or None.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from posbridge import marker as markers
from posbridge.config import StorageSettings
from posbridge.db import Database, file_id, fsync_directory, make_directories, wal_path
from posbridge.errors import StorageError, StorageLost, StorageLow
from posbridge.logs import LogThrottle

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0
MARKER_EVERY = 5.0
PROBE_CAP = 10.0


class DatabaseGuard:
    """Watches one open :class:`~posbridge.db.Database`; see the module docstring. ``counts`` returns the
    invoices per state (blocking; for the marker)."""

    def __init__(self, database: Database, settings: StorageSettings, counts: Callable[[], dict[str, int]]) -> None:
        self._database = database
        self._settings = settings
        self._counts = counts
        # as strings once: admit() looks at them on every invoice, and a Path is converted again each time
        self._file = os.fspath(database.path)
        self._wal = os.fspath(wal_path(database.path))
        self._directory = os.fspath(database.path.parent)
        self.marker_file = markers.marker_path(database.path, settings.marker_directory)
        self.lost: str | None = None
        self.lost_since: float | None = None
        self.low_space: str | None = None
        self.free_bytes: int | None = None
        self.marker_error: str | None = None
        self.rescue_file: Path | None = None
        self._marker: markers.Marker | None = None
        self._marker_written = 0.0
        self._probe_at = 0.0
        self._probe_delay = CHECK_EVERY
        self._reminders = LogThrottle(300.0)
        self._refusals = LogThrottle(60.0)

    # -- what the till and the supervisor see ----------------------------------------------------------------

    def admit(self) -> None:
        """Raise when a new invoice must not be acknowledged now (lost database, low disk)."""
        if self.check_file():
            self._refusals.log(log, logging.WARNING, "invoice refused (503): %s", self.lost, key="lost")
            raise StorageLost(f"{self.lost}; new invoices are refused until posbridge is restarted on its "
                              "database (see the log for what to do)")
        self.check_space()
        if self.low_space is not None:
            self._refusals.log(log, logging.WARNING, "invoice refused (503): %s", self.low_space, key="low")
            raise StorageLow(self.low_space)

    def ready_problem(self) -> str | None:
        """Why the bridge cannot take invoices now, or None. Looks again (cheap), so it is current."""
        self.check_file()
        self.check_space()
        if self.lost is not None:
            return self.lost
        failing = self._database.writer.last_error
        if failing is not None:
            return f"database writes fail: {failing}"
        return self.low_space

    def status(self) -> dict[str, Any]:
        writer = self._database.writer
        return {
            "path": str(self._database.path),
            "database_id": self._database.database_id,
            "lost": self.lost,
            "lost_since": self.lost_since,
            "rescue_copy": str(self.rescue_file) if self.rescue_file else None,
            "writes_failing": writer.last_error,
            "writes_failing_since": writer.last_error_since,
            "free_bytes": self.free_bytes,
            "min_free_bytes": self._settings.min_free_bytes,
            "low_space": self.low_space,
            "marker": str(self.marker_file),
            "marker_error": self.marker_error,
            "last_error": writer.last_error,
        }

    # -- the checks ------------------------------------------------------------------------------------------

    def check_file(self) -> bool:
        """Whether the database (or its WAL) is lost; the first time, say so loudly."""
        if self.lost is not None:
            return True
        database = self._database
        if database.reopening:
            return False
        now_file = file_id(self._file)
        if database.wal_id is None:
            database.wal_id = file_id(self._wal)  # SQLite made it after we opened
            now_wal = database.wal_id
        else:
            now_wal = file_id(self._wal)
        if now_file == database.file_id and now_wal == database.wal_id:
            return False
        what = "deleted" if now_file is None else "replaced by another file" if now_file != database.file_id else (
            "left without its -wal file (deleted or replaced)")
        self.lost = f"the database {database.path} was {what} while posbridge was running"
        self.lost_since = time.time()
        log.critical("%s. New invoices are refused (503) from now on; the invoices already stored are still in "
                     "the open file and delivery goes on from it. A copy of that file is being saved beside the "
                     "marker (%s). Do not just restart: see `posbridge doctor` and the README, \"Failure modes\".",
                     self.lost, self.marker_file.parent)
        return True

    def check_space(self) -> int | None:
        """Free bytes on the database's disk (None when it cannot be measured); sets ``low_space``."""
        try:
            info = os.statvfs(self._directory)
        except OSError:
            self.free_bytes = None
            return None
        free = info.f_bavail * info.f_frsize
        self.free_bytes = free
        minimum = self._settings.min_free_bytes
        if free < minimum:
            if self.low_space is None:
                log.error("the disk of %s is nearly full: %s free, below [storage] min_free_bytes (%s); new "
                          "invoices are refused (503) until space is freed, delivery goes on",
                          self._directory, _size(free), _size(minimum))
            self.low_space = (f"the disk is nearly full ({_size(free)} free, [storage] min_free_bytes is "
                              f"{_size(minimum)}): free space on {self._directory}'s disk")
        elif self.low_space is not None:
            log.warning("disk space is back (%s free); invoices are accepted again", _size(free))
            self.low_space = None
        return free

    # -- the loop --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """At start-up: write the marker for the database just opened, and try one write (a file opened
        read-only shows only when written)."""
        await self._probe()
        await self.refresh_marker(force=True)
        self.check_space()

    async def run(self, stop: asyncio.Event) -> None:
        """Check every second until ``stop``; never raises."""
        while not stop.is_set():
            try:
                await self._tick()
            except Exception:  # noqa: BLE001 - the guard must outlive its own bugs
                self._reminders.log(log, logging.ERROR, "database guard error; continuing", exc_info=True)
            try:
                await asyncio.wait_for(stop.wait(), CHECK_EVERY)
            except asyncio.TimeoutError:
                pass

    async def _tick(self) -> None:
        if self.check_file():
            if self.rescue_file is None:
                await self._rescue()
            self._reminders.log(log, logging.CRITICAL, "%s; invoices are still refused (503)", self.lost,
                                key="lost")
        self.check_space()
        if self.low_space is not None:
            await self._checkpoint()
        if self._database.writer.last_error is not None and time.monotonic() >= self._probe_at:
            await self._probe()
        if self.lost is None and time.monotonic() - self._marker_written >= MARKER_EVERY:
            await self.refresh_marker()

    async def _probe(self) -> None:
        """One small real write; the writer clears its error when it commits."""
        try:
            await self._database.writer.submit(
                lambda conn: conn.execute("UPDATE database_identity SET checked_at = ?", (time.time(),)))
        except StorageError:
            self._probe_delay = min(PROBE_CAP, self._probe_delay * 2)
        else:
            self._probe_delay = CHECK_EVERY
        self._probe_at = time.monotonic() + self._probe_delay

    async def _checkpoint(self) -> None:
        """Move the WAL into the database file and cut it to nothing, so its space is not kept."""
        try:
            if os.stat(self._wal).st_size == 0:
                return
        except OSError:
            return
        try:
            await self._database.writer.submit(
                lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone(), bare=True)
        except StorageError as exc:
            self._reminders.log(log, logging.WARNING, "could not checkpoint the WAL on a nearly full disk: %s",
                                exc)

    async def refresh_marker(self, *, force: bool = False) -> None:
        """Record the database's identity, highest invoice id and counts in the marker, when they changed."""
        self._marker_written = time.monotonic()
        if self.lost is not None or self._database.database_id is None:
            return
        try:
            recorded, top = await self._database.reader.run(_high_water)
            if top > recorded:  # kept in the database too, so purging old invoices cannot lower it
                await self._database.writer.submit(
                    lambda conn: conn.execute("UPDATE database_identity SET high_water = MAX(high_water, ?)",
                                              (top,)))
            counts = await asyncio.to_thread(self._counts)
        except StorageError:
            return  # the old marker stays true: it never says more than the database holds
        high_water = max(recorded, top)
        previous = self._marker
        if (not force and previous is not None and previous.high_water == high_water
                and previous.counts == counts):
            return
        fresh = markers.current(self._database.path, self._database.database_id, high_water, counts, previous)
        try:
            await asyncio.to_thread(markers.write_marker, self.marker_file, fresh)
        except OSError as exc:
            if self.marker_error is None:
                log.warning("cannot keep the database marker %s: %s. A lost or emptied database would not be "
                            "noticed at the next start; give the service a writable %s (the shipped unit has "
                            "StateDirectory=posbridge-marker: sudo posbridge service install)", self.marker_file,
                            exc.strerror or exc, self.marker_file.parent)
            self.marker_error = f"cannot write {self.marker_file}: {exc.strerror or exc}"
            return
        self._marker = fresh
        self.marker_error = None

    def remember(self, marker: markers.Marker | None) -> None:
        """The marker read at start-up (so the first refresh keeps its creation time)."""
        self._marker = marker

    async def _rescue(self) -> None:
        """Save a copy of the open (lost) database beside the marker."""
        if self.rescue_file is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.rescue_file = self.marker_file.parent / f"{self._database.path.name}.rescued-{stamp}.db"
        try:
            await asyncio.to_thread(self._copy_to, self.rescue_file)
        except (OSError, sqlite3.Error, StorageError) as exc:
            log.error("could not save a copy of the lost database to %s: %s", self.rescue_file, exc)
            return
        log.critical("a copy of the lost database (every invoice it holds, as of now) is at %s; to go on with "
                     "it: stop posbridge, move it to %s (owner: the service user), start posbridge",
                     self.rescue_file, self._database.path)

    def _copy_to(self, target: Path) -> None:
        make_directories(target.parent, mode=0o700)
        temporary = target.with_name(target.name + ".tmp")
        temporary.unlink(missing_ok=True)
        copy = sqlite3.connect(temporary)
        try:
            self._database.reader.query(lambda conn: conn.backup(copy))
        finally:
            copy.close()
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
        fsync_directory(target.parent)

    async def aclose(self) -> None:
        """At stop: the marker gets the final counts; a lost database's copy gets the final state."""
        if self.lost is not None:
            await self._rescue()
        else:
            await self.refresh_marker(force=True)


def _high_water(conn: sqlite3.Connection) -> tuple[int, int]:
    """(high water recorded in the identity row, highest invoice id present)."""
    recorded = conn.execute("SELECT high_water FROM database_identity").fetchone()[0]
    top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM invoices").fetchone()[0]
    return int(recorded or 0), int(top)


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"
