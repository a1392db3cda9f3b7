"""The database marker: a small file, kept outside the state directory, that remembers which database posbridge
last ran on and what it held.

Why: a database that is deleted, emptied (truncated to 0 bytes), replaced by another file, or that lost its
``-wal`` after a crash, would otherwise be opened as a new, empty outbox, and every invoice acknowledged but
not yet delivered would be gone without a word. With the marker the daemon refuses to start on such a file
(``posbridge run --accept-new-database`` or removing the marker says "yes, start afresh"), and
``posbridge doctor`` reports it.

Where: ``[storage] marker_dir``, by default a sibling of the state directory (``/var/lib/posbridge`` ->
``/var/lib/posbridge-marker``; the unit makes it writable with a second ``StateDirectory=``), so losing the state
directory does not take the marker with it. The file is ``<database name>.marker.json``, written atomically
(temporary file, fsync, rename, fsync of the directory).

What callers may rely on: :func:`inspect_database` never creates or changes a file; :func:`compare` returns
None when the database is the one the marker describes (or there is no marker), else a :class:`Mismatch`
whose ``message`` says what is wrong and the recovery steps.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from posbridge import __version__
from posbridge.db import fsync_directory, make_directories, read_identity
from posbridge.errors import MarkerUnreadable

log = logging.getLogger(__name__)

MARKER_FORMAT = 1


def marker_path(database: Path, marker_dir: Path) -> Path:
    """The marker file of ``database``."""
    return marker_dir / f"{database.name}.marker.json"


@dataclass(frozen=True)
class Marker:
    """What the daemon last knew of its database. ``counts`` are invoices per state; ``high_water`` the highest
    invoice id the database has held (it only grows)."""

    database: str
    database_id: str
    high_water: int
    counts: dict[str, int] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    version: str = __version__
    format: int = MARKER_FORMAT

    def describe(self) -> str:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(self.counts.items())) or "no invoices"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.updated_at))
        return f"database id {self.database_id[:12]}, {counts}, invoices up to #{self.high_water}, as of {when}"


def read_marker(path: Path) -> Marker | None:
    """The marker at ``path``; None when there is none. Raises :class:`MarkerUnreadable` for anything else."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MarkerUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
        return Marker(database=str(data["database"]), database_id=str(data["database_id"]),
                      high_water=int(data["high_water"]),
                      counts={str(k): int(v) for k, v in dict(data.get("counts") or {}).items()},
                      created_at=float(data.get("created_at") or 0), updated_at=float(data.get("updated_at") or 0),
                      version=str(data.get("version") or "?"), format=int(data.get("format") or 0))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MarkerUnreadable(f"{path} is not a posbridge database marker ({exc})") from None


def write_marker(path: Path, marker: Marker) -> None:
    """Replace the marker atomically and durably (a power cut leaves the old one or the new one, never half)."""
    make_directories(path.parent, mode=0o700)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    try:
        os.write(fd, json.dumps(asdict(marker), indent=1, sort_keys=True).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_directory(path.parent)


def set_aside(path: Path) -> Path | None:
    """Rename the marker to ``...replaced-<time>.json`` (kept for the record when a new database is accepted)."""
    if not path.exists():
        return None
    kept = path.with_name(path.name.removesuffix(".json") + time.strftime(".replaced-%Y%m%d-%H%M%S.json"))
    os.replace(path, kept)
    fsync_directory(path.parent)
    return kept


# -- the database file, looked at without touching it -------------------------------------------------------


@dataclass(frozen=True)
class DatabaseFile:
    """What :func:`inspect_database` saw. ``state``: ``missing``, ``empty`` (0 bytes, or a SQLite file with no
    posbridge schema), ``unidentified`` (a posbridge database from before the identity migration),
    ``identified``, or ``unreadable`` (``error`` says why)."""

    state: Literal["missing", "empty", "unidentified", "identified", "unreadable"]
    size: int = 0
    database_id: str | None = None
    high_water: int = 0
    error: str | None = None


def inspect_database(path: Path) -> DatabaseFile:
    """Look at ``path`` read-only: never creates it, never migrates it."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return DatabaseFile("missing")
    except OSError as exc:
        return DatabaseFile("unreadable", error=exc.strerror or str(exc))
    if size == 0:
        return DatabaseFile("empty", 0)
    try:
        conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=5.0)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            database_id, high_water = read_identity(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return DatabaseFile("unreadable", size, error=str(exc))
    if "invoices" not in tables:
        return DatabaseFile("empty", size)
    if database_id is None:
        return DatabaseFile("unidentified", size, high_water=high_water)
    return DatabaseFile("identified", size, database_id, high_water)


# -- the verdict --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """The database is not the one the marker describes. ``kind``: ``missing``, ``empty``, ``replaced``,
    ``rolled_back`` (the same database, but without its latest invoices: a lost ``-wal``, an old backup)."""

    kind: Literal["missing", "empty", "replaced", "rolled_back"]
    problem: str
    message: str


def compare(database: Path, found: DatabaseFile, marker: Marker | None, where: Path) -> Mismatch | None:
    """Whether starting on ``database`` (as ``found``) would silently lose what the marker at ``where``
    remembers. An unreadable file is not judged here (opening it reports the corruption)."""
    if marker is None or found.state == "unreadable":
        return None
    if found.state == "missing":
        kind, problem = "missing", f"the database {database} does not exist"
    elif found.state == "empty":
        kind, problem = "empty", f"the database {database} is empty ({found.size} bytes, no invoices table)"
    elif found.state == "unidentified":
        kind, problem = "replaced", (f"{database} has no database id: it is not the database posbridge last ran "
                                     "on (a file from an older posbridge), or it lost its latest changes (-wal)")
    elif found.database_id != marker.database_id:
        kind, problem = "replaced", (f"{database} is not the database posbridge last ran on (its id is "
                                     f"{(found.database_id or '')[:12]})")
    elif found.high_water < marker.high_water:
        kind, problem = "rolled_back", (
            f"{database} is the right database but lacks its latest invoices (it goes up to invoice "
            f"#{found.high_water}, posbridge had seen #{marker.high_water}): its -wal file was lost after a "
            "crash, or an older copy was put back")
    else:
        return None
    return Mismatch(kind, problem, _refusal(database, problem, marker, where))


def _refusal(database: Path, problem: str, marker: Marker, where: Path) -> str:
    pending = marker.counts.get("pending", 0)
    stake = (f"{pending} invoice{'' if pending == 1 else 's'} acknowledged to the till but not yet delivered "
             "would be lost" if pending else "invoices it held would be forgotten")
    return "\n".join([
        f"posbridge will not start: {problem}.",
        f"posbridge last ran on a database here ({marker.describe()}; from the marker {where}).",
        f"Starting on a new database now would hide that: {stake}.",
        "What to do:",
        f"  1. Find the database file: a backup, or a copy posbridge saved when it noticed the loss "
        f"({where.parent}/*.rescued-*.db). Stop posbridge, put the file at {database} (owner: the service "
        "user, mode 0600), remove any stale -wal/-shm files beside it, and start posbridge again.",
        "  2. Check the disk if files vanished on their own: dmesg, `posbridge doctor`.",
        f"  3. Only when those invoices are known to be delivered or re-entered in the till: start afresh with "
        f"`posbridge run --accept-new-database` (under systemd: sudo rm {where} && sudo systemctl restart "
        "posbridge).",
    ])


def current(database: Path, database_id: str, high_water: int, counts: dict[str, int],
            previous: Marker | None) -> Marker:
    """The marker to write for the open database now."""
    now = time.time()
    created = previous.created_at if previous is not None and previous.database_id == database_id else now
    return Marker(database=str(database), database_id=database_id, high_water=high_water, counts=dict(counts),
                  created_at=created, updated_at=now)
