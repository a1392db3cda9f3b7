"""The configuration file as `posbridge setup` edits it: comments and untouched keys kept (tomlkit), every change
named, nothing written unless something changed and the result validates.

What callers rely on: :meth:`ConfigEdit.set` records a change only when the value differs; :meth:`changes` lists
them as ``[cloud] account`` style names; :meth:`write` refuses a result that does not validate (the file is left
as it was) and replaces the file atomically, keeping its mode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT, Table

from posbridge import config as config_mod
from posbridge.errors import ConfigError

EXAMPLE_LOCATIONS = (
    Path(__file__).resolve().parents[2] / "config" / "posbridge.example.toml",  # a checkout
    Path("/usr/share/doc/posbridge/examples/posbridge.example.toml"),  # the Debian package
)


@dataclass
class ConfigEdit:
    """One configuration file being edited."""

    path: Path
    document: tomlkit.TOMLDocument
    original: str | None  # None: the file does not exist yet
    problems: list[str] = field(default_factory=list)
    _changes: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path) -> "ConfigEdit":
        """The file at ``path`` (or, when there is none, the shipped example as a starting point)."""
        if path.exists():
            text = path.read_text(encoding="utf-8")
            try:
                document = tomlkit.parse(text)
            except Exception as exc:  # noqa: BLE001 - tomlkit's parse errors have no common base we can name
                raise ConfigError(str(path), [f"not valid TOML: {exc}; fix it or move it away, then run setup "
                                              "again"]) from None
            edit = cls(path, document, text)
        else:
            example = next((p for p in EXAMPLE_LOCATIONS if p.is_file()), None)
            document = tomlkit.parse(example.read_text(encoding="utf-8")) if example else tomlkit.document()
            edit = cls(path, document, None)
        try:
            edit.settings()
        except ConfigError as exc:
            edit.problems = list(exc.problems)
        return edit

    def settings(self) -> config_mod.Settings:
        """The configuration as it would be written now, validated (raises :class:`ConfigError`)."""
        return config_mod.from_dict(self.document.unwrap(), self.path)

    def get(self, section: str, key: str, default: Any = None) -> Any:
        table = self.document.get(section)
        if table is None or key not in table:
            return default
        return table[key].unwrap() if hasattr(table[key], "unwrap") else table[key]

    def set(self, section: str, key: str, value: Any) -> bool:
        """Set ``[section] key``; True (and recorded) only when the value changes."""
        if self.get(section, key, object()) == value:
            return False
        table = self.document.get(section)
        if table is None:
            table = tomlkit.table()
            self.document[section] = table
        table[key] = value
        self._changes.append(f"[{section}] {key}")
        return True

    def scanners(self) -> list[dict[str, Any]]:
        value = self.document.get("scanners")
        if value is None:
            return []
        return [dict(t.unwrap()) if hasattr(t, "unwrap") else dict(t) for t in value]

    def replace_scanners(self, scanners: list[dict[str, Any]]) -> bool:
        """The ``[[scanners]]`` list becomes exactly ``scanners``; True when it changed."""
        if self.scanners() == scanners:
            return False
        tables = AoT([])
        for scanner in scanners:
            table: Table = tomlkit.table()
            for key, value in scanner.items():
                table[key] = value
            tables.append(table)
        if "scanners" in self.document:
            del self.document["scanners"]
        if scanners:
            self.document["scanners"] = tables
        self._changes.append("[[scanners]]")
        return True

    def changes(self) -> list[str]:
        """What changed, once each, in order (a new file: everything is new)."""
        return list(dict.fromkeys(self._changes))

    def text(self) -> str:
        return tomlkit.dumps(self.document)

    @property
    def dirty(self) -> bool:
        return self.original is None or self.text() != self.original

    def write(self) -> None:
        """Validate, then replace the file atomically (mode kept; 0644 for a new file)."""
        self.settings()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o644
        temporary = self.path.with_name(f".{self.path.name}.setup-tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.text())
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, mode)
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self.original = self.text()


def scanner_entry(spec: str) -> dict[str, Any]:
    """A ``[[scanners]]`` table from a device spec: ``serial:/dev/ttyACM0[:BAUD]``, ``hid:VID:PID[:pos|keyboard]``
    or ``camera:SOURCE``. Raises ``ValueError`` naming what is wrong."""
    kind, _, rest = spec.partition(":")
    if kind == "serial" and rest:
        path, baud = rest, ""
        if ":" in rest and rest.rsplit(":", 1)[1].isdigit():
            path, baud = rest.rsplit(":", 1)
        entry: dict[str, Any] = {"name": "till-scanner", "type": "serial", "port": path}
        if baud:
            entry["baudrate"] = int(baud)
        return entry
    if kind == "hid":
        parts = rest.split(":")
        if len(parts) not in (2, 3) or not all(len(p) == 4 for p in parts[:2]):
            raise ValueError(f"{spec!r}: write hid:VID:PID with 4-digit hex ids, e.g. hid:0c2e:0b87 "
                             "(see `posbridge scanners list`)")
        mode = parts[2] if len(parts) == 3 else "pos"
        if mode not in ("pos", "keyboard"):
            raise ValueError(f"{spec!r}: the mode after VID:PID is pos or keyboard, not {mode!r}")
        return {"name": "till-scanner", "type": "hid", "vid": parts[0].lower(), "pid": parts[1].lower(), "mode": mode}
    if kind == "camera" and rest:
        return {"name": "till-camera", "type": "camera", "source": rest}
    raise ValueError(f"{spec!r} is not a scanner: write serial:/dev/ttyACM0, hid:VID:PID[:keyboard], "
                     "camera:/dev/video0, keep or none")


__all__ = ["ConfigEdit", "scanner_entry"]
