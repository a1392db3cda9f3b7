"""The errors posbridge's parts raise to each other.

Callers catch what they can handle. Messages are written for the person who reads them in the shop: they say
what is wrong and what to do, and never contain a token.
"""

from __future__ import annotations


class PosbridgeError(Exception):
    """Base of every error posbridge raises on purpose."""


class ConfigError(PosbridgeError):
    """The configuration cannot be used. Names the file and each bad key; the CLI exits 2 with it."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        if len(problems) == 1:
            text = f"config error in {source}: {problems[0]}"
        else:
            text = f"config errors in {source}:\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(text)


class CloudError(PosbridgeError):
    """Base of the cloud client's errors."""


class CloudUnavailable(CloudError):
    """The cloud could not be reached in time or answered a transient error (5xx, 408, 425, 429).

    Worth retrying later. ``retry_after`` is the server's own hint in seconds, when it gave one.
    """

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None,
                 body: bytes = b"", content_type: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.body = body
        self.content_type = content_type


class CloudRejected(CloudError):
    """The cloud refused the request for good (a 4xx other than 401/403/408/425/429).

    Retrying the same bytes will not help; a person has to look at ``body``.
    """

    def __init__(self, status: int, body: bytes, content_type: str | None) -> None:
        super().__init__(f"the cloud refused it with HTTP {status}")
        self.status = status
        self.body = body
        self.content_type = content_type


class CloudAuthError(CloudError):
    """The cloud refused the bridge's token (401/403). Nothing is wrong with the request itself."""

    def __init__(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        super().__init__(
            f"the cloud refused the API token (HTTP {status}); check it with `posbridge token check`"
        )
        self.status = status
        self.body = body
        self.content_type = content_type


class StorageError(PosbridgeError):
    """The database could not store or read something (disk full, read-only, corrupt file)."""


class TokenMissing(PosbridgeError):
    """A token the bridge needs is not configured anywhere it looks."""


# --- network ------------------------------------------------------------------------------------------------


class CloudAnswerTooLarge(CloudUnavailable):
    """The cloud's answer was bigger than ``[cloud] max_answer_bytes``: nothing of it is kept or relayed.

    A failed attempt like any other transient one (an invoice is tried again later with backoff; a member
    look-up is answered from the cache). ``status`` is the HTTP status the oversized answer came with.
    """

    def __init__(self, status: int, limit: int, size: int | None) -> None:
        seen = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        super().__init__(f"the cloud's answer (HTTP {status}) was {seen}, over [cloud] max_answer_bytes = {limit}; "
                         "nothing of it was kept", status=status)
        self.limit = limit
        self.size = size
