"""The local API's TLS context, from ``[server] tls_cert`` / ``tls_key``.

The handshake itself is run by the connection guard (posbridge/api/connections.py, asyncio ``start_tls``) so
that it is counted and bounded like a request head; ``posbridge tls generate`` (posbridge/cli/tls.py) makes a
self-signed pair.
"""

from __future__ import annotations

import ssl

from posbridge.config import ServerSettings
from posbridge.errors import ConfigError


def tls_context(settings: ServerSettings, source: str = "(built-in defaults)") -> ssl.SSLContext | None:
    """A server TLS context (TLS 1.2 or newer) from ``tls_cert``/``tls_key``, or None when TLS is off."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for key, path in (("tls_cert", settings.tls_cert), ("tls_key", settings.tls_key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(source, [f"[server] {key}: cannot read {path}: {exc.strerror} (the service user "
                                       "must be able to read it; `posbridge tls generate` makes a pair)"]) from None
    try:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    except ssl.SSLError as exc:
        raise ConfigError(source, [f"[server] tls_cert/tls_key: {settings.tls_cert} and {settings.tls_key} are "
                                   f"not a usable certificate and key pair ({exc.reason or exc}); make a new pair "
                                   "with `posbridge tls generate`"]) from None
    return context


__all__ = ["tls_context"]
