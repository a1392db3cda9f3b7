"""Keyring backends for tests: a real ``keyring.backend.KeyringBackend`` without D-Bus or a desktop.

Select one in a subprocess with ``PYTHON_KEYRING_BACKEND=tests.support.memory_keyring.FileKeyring`` (and the
repository on ``PYTHONPATH``); ``FileKeyring`` keeps its passwords in the JSON file named by
``$POSBRIDGE_TEST_KEYRING_FILE``, so the test can look at what the CLI stored. In-process, pass an instance to
``keyring.set_keyring``. ``BrokenKeyring`` fails every call the way a half-working desktop keyring does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.compat import properties
from keyring.errors import KeyringError, PasswordDeleteError

ENV_FILE = "POSBRIDGE_TEST_KEYRING_FILE"
ENV_BROKEN = "POSBRIDGE_TEST_KEYRING_BROKEN"


class FileKeyring(KeyringBackend):
    """Passwords in a JSON file: ``{"service": {"username": "password"}}``.

    Not viable (so never picked by keyring's auto-detection) unless ``$POSBRIDGE_TEST_KEYRING_FILE`` is set.
    """

    @properties.classproperty
    def priority(cls) -> float:
        if not os.environ.get(ENV_FILE):
            raise RuntimeError(f"test keyring: set ${ENV_FILE}")
        return 1

    def __init__(self, path: Path | str | None = None) -> None:
        super().__init__()
        self.path = Path(path or os.environ[ENV_FILE])

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def _save(self, data: dict[str, dict[str, str]]) -> None:
        self.path.write_text(json.dumps(data, indent=1), encoding="utf-8")

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(service, {}).get(username)

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data.setdefault(service, {})[username] = password
        self._save(data)

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if username not in data.get(service, {}):
            raise PasswordDeleteError(f"no password for {username!r} in {service!r}")
        del data[service][username]
        self._save(data)


class BrokenKeyring(KeyringBackend):
    """Every call fails, like a Secret Service that is present but cannot be unlocked.

    Not viable for auto-detection unless ``$POSBRIDGE_TEST_KEYRING_BROKEN=1``.
    """

    @properties.classproperty
    def priority(cls) -> float:
        if os.environ.get(ENV_BROKEN) != "1":
            raise RuntimeError(f"test keyring: set ${ENV_BROKEN}=1")
        return 1

    def get_password(self, service: str, username: str) -> str | None:
        raise KeyringError("Unable to autolaunch a dbus-daemon without a $DISPLAY for X11")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise KeyringError("Unable to autolaunch a dbus-daemon without a $DISPLAY for X11")

    def delete_password(self, service: str, username: str) -> None:
        raise KeyringError("Unable to autolaunch a dbus-daemon without a $DISPLAY for X11")
