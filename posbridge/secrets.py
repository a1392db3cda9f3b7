"""The bridge's two secrets: the cloud API token and the local token the POS presents.

Where a token is looked for, first found wins:

1. systemd credentials: ``$CREDENTIALS_DIRECTORY/cloud-token`` / ``local-token`` (``LoadCredential=`` in
   the unit). A blank credential means "not set here" (the unit ships blank fallbacks).
2. The credential file on disk, ``/etc/posbridge/credentials/<name>`` (``$POSBRIDGE_CREDENTIALS_DIR``), when
   this process may read it: root running ``posbridge token check`` sees what the service will get.
3. The system keyring: service ``posbridge``, user ``cloud-token`` / ``local-token``. A machine without a
   keyring backend (a headless till) simply has no token there; keyring errors never escape.
4. The environment, ``$POSBRIDGE_CLOUD_TOKEN`` / ``$POSBRIDGE_LOCAL_TOKEN``: for development. Using it under
   systemd, or without ``POSBRIDGE_DEV=1``, logs one warning per process.

What callers can rely on: a :class:`Token`'s ``repr``/``str`` never show the value; every token loaded here is
registered with :mod:`posbridge.redaction`, so it is redacted from every log record; error messages never contain a
token. Use :func:`posbridge.redaction.redact` / ``redact_url`` for anything else that is printed (URLs, status pages, errors).
"""

from __future__ import annotations

import logging
import os
import secrets as _stdlib_secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from posbridge.errors import InvalidToken, TokenMissing, TokenStoreUnavailable
from posbridge.redaction import register_secret

log = logging.getLogger(__name__)

TokenKind = Literal["cloud", "local"]
KINDS: tuple[TokenKind, ...] = ("cloud", "local")

ENV_CLOUD = "POSBRIDGE_CLOUD_TOKEN"
ENV_LOCAL = "POSBRIDGE_LOCAL_TOKEN"
ENV_DEV = "POSBRIDGE_DEV"
ENV_CREDENTIALS_DIR = "POSBRIDGE_CREDENTIALS_DIR"
KEYRING_SERVICE = "posbridge"
SYSTEM_CREDENTIALS_DIR = Path("/etc/posbridge/credentials")

CREDENTIAL_NAMES: dict[TokenKind, str] = {"cloud": "cloud-token", "local": "local-token"}
ENV_NAMES: dict[TokenKind, str] = {"cloud": ENV_CLOUD, "local": ENV_LOCAL}
_DESCRIPTIONS: dict[TokenKind, str] = {"cloud": "cloud API token", "local": "local token for the POS"}


@dataclass(frozen=True)
class Token:
    """A secret and where it came from. ``repr`` and ``str`` never show the value."""

    value: str
    source: str

    def __repr__(self) -> str:
        return f"Token(source={self.source!r})"

    __str__ = __repr__


def credentials_dir() -> Path:
    """Where ``LoadCredential=`` reads the token files from (and ``posbridge token set --system`` writes)."""
    return Path(os.environ.get(ENV_CREDENTIALS_DIR) or SYSTEM_CREDENTIALS_DIR)


def find_tokens(kind: TokenKind) -> list[Token]:
    """Every place that holds a ``kind`` token, in lookup order (the first is the one in use)."""
    found = [
        t for t in (_from_systemd(kind), _from_credential_file(kind), _from_keyring(kind), _from_env(kind))
        if t is not None
    ]
    for token in found:
        _register(token.value)
    return found


def load_token(kind: TokenKind) -> Token:
    """The ``kind`` token in use. Raises :class:`TokenMissing` naming every place it looked and the fix.

    Every call reads the sources again (a few small files and a keyring query): load at start-up and keep the
    :class:`Token`; call again only to pick up a changed token.
    """
    found = find_tokens(kind)
    if not found:
        raise TokenMissing(_missing_message(kind))
    token = found[0]
    if token.source.startswith("environment"):
        _warn_env_use(token.source)
    return token


def load_cloud_token() -> Token:
    """The cloud API token (see the module docstring for the lookup order)."""
    return load_token("cloud")


def load_local_token() -> Token:
    """The token the POS must present (``?_token=`` or ``Authorization: Bearer``)."""
    return load_token("local")


def check_token_value(value: str) -> str:
    """The value without surrounding whitespace; :class:`InvalidToken` when it cannot be a token."""
    value = value.strip()
    if not value:
        raise InvalidToken("the token is empty")
    if len(value) > 4096:
        raise InvalidToken(f"the token is {len(value)} characters long; more than 4096 is not a token")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise InvalidToken("the token contains spaces or control characters; paste it again, on one line")
    return value


def store_token(kind: TokenKind, value: str) -> str:
    """Save the token in the system keyring; returns where it went (for printing).

    Raises :class:`InvalidToken` for an impossible value and :class:`TokenStoreUnavailable` when the machine
    has no usable keyring (the message explains the credential file to use instead).
    """
    value = check_token_value(value)
    keyring = _keyring_module()
    if keyring is None:
        raise TokenStoreUnavailable(_unavailable_message(kind, "store", "the keyring package is not installed"))
    try:
        keyring.set_password(KEYRING_SERVICE, CREDENTIAL_NAMES[kind], value)
    except Exception as exc:  # NoKeyringError, D-Bus errors, locked collections...
        raise TokenStoreUnavailable(_unavailable_message(kind, "store", _keyring_reason(exc))) from None
    _register(value)
    return keyring_location(kind)


def delete_token(kind: TokenKind) -> bool:
    """Remove the token from the system keyring. False when there was none; :class:`TokenStoreUnavailable`
    when the machine has no usable keyring."""
    keyring = _keyring_module()
    if keyring is None:
        raise TokenStoreUnavailable(_unavailable_message(kind, "delete", "the keyring package is not installed"))
    from keyring.errors import PasswordDeleteError

    try:
        if keyring.get_password(KEYRING_SERVICE, CREDENTIAL_NAMES[kind]) is None:
            return False
        keyring.delete_password(KEYRING_SERVICE, CREDENTIAL_NAMES[kind])
    except PasswordDeleteError:
        return False
    except Exception as exc:
        raise TokenStoreUnavailable(_unavailable_message(kind, "delete", _keyring_reason(exc))) from None
    return True


def write_credential_file(kind: TokenKind, value: str, directory: Path | None = None) -> Path:
    """Write the token as a plain ``LoadCredential=`` file (mode 0600, directory 0700) and return its path.

    Needs write access to the directory (root for ``/etc/posbridge/credentials``); raises ``OSError``
    otherwise. The file is replaced atomically, so the service never reads half a token.
    """
    value = check_token_value(value)
    directory = directory or credentials_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / CREDENTIAL_NAMES[kind]
    temporary = directory / f".{CREDENTIAL_NAMES[kind]}.tmp-{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _register(value)
    return target


def keyring_location(kind: TokenKind) -> str:
    """How a keyring-held token's source is named (equal to its :attr:`Token.source`)."""
    return f"system keyring (service {KEYRING_SERVICE!r}, user {CREDENTIAL_NAMES[kind]!r})"


def generate_local_token() -> str:
    """A new random local token: 32 bytes, URL-safe (43 characters), fit for ``?_token=`` as is."""
    return _stdlib_secrets.token_urlsafe(32)


# --- sources ----------------------------------------------------------------------------------------------

def _read_secret_file(path: Path) -> str | None:
    """Stripped contents, or None when the file is missing, blank or unreadable (a warning for the latter)."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (PermissionError, IsADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read the credential file %s (%s); ignoring it", path, type(exc).__name__)
        return None
    return value or None


def _from_systemd(kind: TokenKind) -> Token | None:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    name = CREDENTIAL_NAMES[kind]
    value = _read_secret_file(Path(directory) / name)
    return Token(value, f"systemd credential {name!r} ({directory}/{name})") if value else None


def _from_credential_file(kind: TokenKind) -> Token | None:
    path = credentials_dir() / CREDENTIAL_NAMES[kind]
    value = _read_secret_file(path)
    return Token(value, f"credential file {path}") if value else None


def _keyring_module():  # type: ignore[no-untyped-def]
    try:
        import keyring
    except Exception:  # not installed, or broken on import
        return None
    return keyring


def _from_keyring(kind: TokenKind) -> Token | None:
    keyring = _keyring_module()
    if keyring is None:
        return None
    try:
        value = keyring.get_password(KEYRING_SERVICE, CREDENTIAL_NAMES[kind])
    except Exception as exc:  # no backend, no D-Bus, locked: "not there"
        log.debug("system keyring not usable (%s); looking elsewhere", _keyring_reason(exc))
        return None
    value = (value or "").strip()
    return Token(value, keyring_location(kind)) if value else None


def _from_env(kind: TokenKind) -> Token | None:
    name = ENV_NAMES[kind]
    value = os.environ.get(name, "").strip()
    return Token(value, f"environment variable {name}") if value else None


_env_warned = False
_env_lock = threading.Lock()


def _warn_env_use(source: str) -> None:
    """One warning per process when a token comes from the environment outside development."""
    global _env_warned
    if development_mode():
        return
    with _env_lock:
        if _env_warned:
            return
        _env_warned = True
    log.warning(
        "a token comes from the %s; environment variables leak into child processes and crash reports. "
        "On a till use the systemd credential file (systemd/README.md, \"Tokens\"); set %s=1 to silence "
        "this on a development machine",
        source, ENV_DEV,
    )


def _register(value: str) -> None:
    register_secret(value)


def _keyring_reason(exc: BaseException) -> str:
    if type(exc).__name__ == "NoKeyringError":
        return "no keyring backend on this machine"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def development_mode() -> bool:
    """True on a development machine (``POSBRIDGE_DEV=1``, not under systemd): tokens from the environment are
    expected there and not warned about."""
    return os.environ.get(ENV_DEV) == "1" and not os.environ.get("INVOCATION_ID")


def where_looked(kind: TokenKind) -> str:
    """Every place a ``kind`` token is looked for, as a technician reads it."""
    name = CREDENTIAL_NAMES[kind]
    return (f"looked in the systemd credential {name!r}, {credentials_dir() / name}, the system keyring and "
            f"${ENV_NAMES[kind]}")


def fix_command(kind: TokenKind) -> str:
    """The command that puts a ``kind`` token where the service finds it."""
    return "sudo posbridge token set --system" if kind == "cloud" else "sudo posbridge token generate --local --system"


def _missing_message(kind: TokenKind) -> str:
    return (f"no {_DESCRIPTIONS[kind]}: {where_looked(kind)}. Fix: `{fix_command(kind)}`, then "
            "`sudo systemctl restart posbridge`")


def _unavailable_message(kind: TokenKind, action: str, reason: str) -> str:
    name = CREDENTIAL_NAMES[kind]
    path = credentials_dir() / name
    if action == "delete":
        return (
            f"cannot delete the {_DESCRIPTIONS[kind]} from the system keyring ({reason}). If it is a credential "
            f"file, remove it instead: `sudo rm {path}` (or `{path}.cred`), then `sudo systemctl restart posbridge`"
        )
    local = " --local" if kind == "local" else ""
    return (
        f"cannot store the {_DESCRIPTIONS[kind]} in the system keyring ({reason}); this is normal on a headless "
        f"till. Put it in the service's credential file instead:\n"
        f"  sudo posbridge token set{local} --system     (plain file {path}, mode 0600)\n"
        f"  or encrypted (systemd >= 250): sudo systemd-creds encrypt --name={name} - {path}.cred\n"
        f"    (paste the token, press Ctrl-D; then see systemd/README.md, 'Encrypted credentials')\n"
        f"then `sudo systemctl restart posbridge`. For development only: export {ENV_NAMES[kind]}=..."
    )
