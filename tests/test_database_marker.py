"""The database marker's verdicts, and the durability of the files and directories posbridge creates.

Durability is checked against a model of a power cut: a new directory entry (a directory made, a file created
or renamed into place) survives only if its parent directory is fsynced after it was made, and the parent
survives too. The test records the daemon code's own ``mkdir``/``open``/``rename``/``fsync`` calls (in this
process, on the real file system) and asks the model which entries a cut at the end would lose. What it proves:
posbridge asks for every entry it creates to be made durable, in the right order. What it cannot prove: that
the kernel and the disk keep that promise, or SQLite's own syncs of its ``-wal`` (made in C, not seen here;
SQLite documents them).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from posbridge import marker as markers
from posbridge.db import Database
from posbridge.marker import Marker, compare, inspect_database, read_marker, write_marker


class PowerCutModel:
    """Records entry creations and directory fsyncs; ``lost()`` is what a power cut now would take."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.created: list[Path] = []
        self.synced: list[tuple[int, Path]] = []
        self.events = 0
        real_mkdir, real_open, real_replace, real_fsync = os.mkdir, os.open, os.replace, os.fsync

        def mkdir(path, *args, **kwargs):
            real_mkdir(path, *args, **kwargs)
            self._created(Path(path))

        def open_(path, flags, *args, **kwargs):
            existed = os.path.exists(path)
            fd = real_open(path, flags, *args, **kwargs)
            if flags & os.O_CREAT and not existed:
                self._created(Path(path))
            return fd

        def replace(source, target, *args, **kwargs):
            real_replace(source, target, *args, **kwargs)
            self._created(Path(target))

        def fsync(fd):
            real_fsync(fd)
            target = Path(os.readlink(f"/proc/self/fd/{fd}"))
            self.events += 1
            self.synced.append((self.events, target))

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "fsync", fsync)
        self._order: dict[Path, int] = {}

    def _created(self, path: Path) -> None:
        self.events += 1
        path = path.absolute()
        self.created.append(path)
        self._order[path] = self.events

    def survives(self, path: Path, base: Path) -> bool:
        if path == base or path not in self._order:
            return True  # existed before the test: durable already
        made = self._order[path]
        parent_synced = any(at > made and target == path.parent for at, target in self.synced)
        return parent_synced and self.survives(path.parent, base)

    def lost(self, base: Path) -> list[Path]:
        return [path for path in self.created if path.exists() and not self.survives(path, base)]


def test_directories_and_the_database_file_posbridge_creates_survive_a_power_cut(tmp_path, monkeypatch):
    model = PowerCutModel(monkeypatch)
    path = tmp_path / "var" / "lib" / "posbridge" / "posbridge.db"
    Database(path).close()
    assert path.exists()
    created = set(model.created)
    assert {tmp_path / "var", tmp_path / "var/lib", tmp_path / "var/lib/posbridge", path} <= created
    assert model.lost(tmp_path) == []


def test_the_marker_is_replaced_atomically_and_durably(tmp_path, monkeypatch):
    model = PowerCutModel(monkeypatch)
    where = tmp_path / "posbridge-marker" / "posbridge.db.marker.json"
    first = Marker(database="/x/posbridge.db", database_id="a" * 32, high_water=7, counts={"pending": 2})
    write_marker(where, first)
    write_marker(where, Marker(database="/x/posbridge.db", database_id="a" * 32, high_water=9))
    assert read_marker(where).high_water == 9
    assert not list(where.parent.glob("*.tmp"))
    assert model.lost(tmp_path) == []
    assert any(target == where.parent for _, target in model.synced)


# -- verdicts ---------------------------------------------------------------------------------------------


@pytest.fixture
def known(tmp_path) -> tuple[Path, Marker]:
    """A database with 3 invoices, and the marker that describes it."""
    path = tmp_path / "state" / "posbridge.db"
    with Database(path) as database:
        database.writer.call(lambda c: c.executemany(
            "INSERT INTO invoices (key, body, content_type, state, received_at, next_attempt_at)"
            " VALUES (?, x'7b7d', 'application/json', 'pending', 0, 0)", [("a",), ("b",), ("c",)]))
        database_id = database.database_id
    assert database_id
    return path, Marker(database=str(path), database_id=database_id, high_water=3, counts={"pending": 3})


def test_the_database_the_marker_describes_is_accepted(known, tmp_path):
    path, marker = known
    assert compare(path, inspect_database(path), marker, tmp_path / "m.json") is None


def test_without_a_marker_any_database_is_accepted(tmp_path):
    assert compare(tmp_path / "nope.db", inspect_database(tmp_path / "nope.db"), None, tmp_path / "m.json") is None


def test_a_missing_database_is_refused(known, tmp_path):
    path, marker = known
    path.unlink()
    mismatch = compare(path, inspect_database(path), marker, tmp_path / "m.json")
    assert mismatch.kind == "missing" and "3 invoices acknowledged" in mismatch.message
    assert not path.exists(), "inspecting never creates the file"


def test_a_database_truncated_to_nothing_is_refused(known, tmp_path):
    path, marker = known
    os.truncate(path, 0)
    assert compare(path, inspect_database(path), marker, tmp_path / "m.json").kind == "empty"


def test_another_database_in_its_place_is_refused(known, tmp_path):
    path, marker = known
    path.unlink()
    Database(path).close()
    mismatch = compare(path, inspect_database(path), marker, tmp_path / "m.json")
    assert mismatch.kind == "replaced" and "--accept-new-database" in mismatch.message


def test_the_same_database_without_its_latest_invoices_is_refused(known, tmp_path):
    path, marker = known
    ahead = Marker(database=marker.database, database_id=marker.database_id, high_water=5, counts={"pending": 5})
    mismatch = compare(path, inspect_database(path), ahead, tmp_path / "m.json")
    assert mismatch.kind == "rolled_back" and "invoice #3" in mismatch.problem


def test_purged_invoices_do_not_look_like_a_rollback(known, tmp_path):
    path, marker = known
    conn = sqlite3.connect(path)
    conn.execute("UPDATE database_identity SET high_water = 3")
    conn.execute("DELETE FROM invoices")  # what the retention purge does to old sent invoices
    conn.commit()
    conn.close()
    assert compare(path, inspect_database(path), marker, tmp_path / "m.json") is None


def test_a_damaged_marker_is_reported_not_trusted(tmp_path):
    where = tmp_path / "m.json"
    where.write_text("{not json")
    with pytest.raises(markers.MarkerUnreadable):
        read_marker(where)
