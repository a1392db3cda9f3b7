"""Keeping secrets out of everything the bridge prints: logs, error bodies, status pages, stored cloud answers.

Two things live here, and nothing else of ours is imported, so every module may use it:

- the process's *registered secrets*: every token :mod:`posbridge.secrets` loads is registered with
  :func:`register_secret` and from then on replaced by ``***`` wherever :func:`redact_text` is applied (the
  log filter applies it to every record);
- the rules for token-looking text: ``_token=`` query values, ``Bearer`` credentials and URL passwords are
  hidden even when their value was never registered (a token of another bridge, a typo'd one).
"""

from __future__ import annotations

import re
import threading
from urllib.parse import quote, quote_plus

MIN_REDACT_LENGTH = 4
"""Values shorter than this are never searched for: they cannot be told apart from ordinary text."""

_QUERY_TOKEN = re.compile(r"(?i)(_token=)[^&#\s'\"<>]+")
_QUOTED_TOKEN = re.compile(r"""(?i)(["']_token["']\s*[:=]\s*["'])[^"']*""")
_BEARER = re.compile(r"(?i)(\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+(@)")

_secrets: frozenset[str] = frozenset()
_secrets_lock = threading.Lock()


def redact(text: str, *tokens: str) -> str:
    """``text`` with each given token value (also URL-encoded), every ``_token=`` value, ``Bearer`` credential
    and URL password replaced by ``***``. Values shorter than :data:`MIN_REDACT_LENGTH` are not searched for."""
    for token in sorted({t for t in tokens if t and len(t) >= MIN_REDACT_LENGTH}, key=len, reverse=True):
        for form in {token, quote(token, safe=""), quote_plus(token, safe="")}:
            text = text.replace(form, "***")
    text = _QUERY_TOKEN.sub(r"\1***", text)
    text = _QUOTED_TOKEN.sub(r"\1***", text)
    text = _BEARER.sub(r"\1***", text)
    return _URL_PASSWORD.sub(r"\1***\2", text)


def redact_url(url: object, *tokens: str) -> str:
    """A URL (``str`` or ``httpx.URL``) safe to print: ``_token`` values, passwords and given tokens hidden."""
    return redact(str(url), *tokens)


def register_secret(value: str | None) -> None:
    """From now on, ``value`` is replaced by ``***`` by :func:`redact_text`. Blank or very short values are
    ignored."""
    global _secrets
    if not value or len(value.strip()) < MIN_REDACT_LENGTH:
        return
    with _secrets_lock:
        _secrets = _secrets | {value.strip()}


def redact_text(text: str) -> str:
    """``text`` with registered secrets and token-looking parts hidden (what the log filter applies)."""
    return redact(text, *_secrets)

