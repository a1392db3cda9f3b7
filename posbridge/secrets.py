"""Cloud and local tokens. (Minimal: environment only; systemd credentials and keyring come next.)"""

from __future__ import annotations

import os
from dataclasses import dataclass

from posbridge.errors import TokenMissing

ENV_CLOUD = "POSBRIDGE_CLOUD_TOKEN"
ENV_LOCAL = "POSBRIDGE_LOCAL_TOKEN"


@dataclass(frozen=True)
class Token:
    """A secret and where it came from. ``repr`` and ``str`` never show the value."""

    value: str
    source: str

    def __repr__(self) -> str:
        return f"Token(source={self.source!r})"

    __str__ = __repr__


def _from_env(name: str) -> Token | None:
    value = os.environ.get(name, "").strip()
    return Token(value, f"environment variable {name}") if value else None


def load_cloud_token() -> Token:
    token = _from_env(ENV_CLOUD)
    if token is None:
        raise TokenMissing(f"no cloud API token: set it with `posbridge token set` or ${ENV_CLOUD}")
    return token


def load_local_token() -> Token:
    token = _from_env(ENV_LOCAL)
    if token is None:
        raise TokenMissing(f"no local token for the POS: create one with `posbridge token generate --local` or ${ENV_LOCAL}")
    return token
