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


# --- scanners ---
# Scanner inputs, decoders and card text. Drivers raise ScannerUnavailable / ScannerGone / SourceExhausted and
# the supervisor decides what happens next; the others are answers about one input (a report, a descriptor,
# a decoder setting, a card's text). Messages name the device, byte or key that is wrong and the fix.

from typing import TYPE_CHECKING  # noqa: E402 - kept inside this section

if TYPE_CHECKING:
    from posbridge.cards import CardRead


class ScannerError(PosbridgeError):
    """Base of every error about a scanner, its reports, its decoder or the text it read."""


class ScannerUnavailable(ScannerError):
    """The device cannot be opened now (absent, permission denied, busy).

    The message says what is wrong *and* what to do ("add the service user to dialout", "install the udev rule
    drivers/99-posbridge-scanners.rules"). The supervisor retries with backoff.
    """


class ScannerGone(ScannerError):
    """The device went away while open (unplugged, camera vanished). The supervisor reopens it."""


class SourceExhausted(ScannerGone):
    """The source ended for good and cannot come back (stdin at end of file, a finished video file).

    The supervisor logs it once at INFO and stops supervising that source instead of reopening it.
    """


class ReportError(ScannerError, ValueError):
    """A USB HID report that cannot be what the device is supposed to send (or a capture line that is not hex).

    The message says which byte is wrong, with the byte counts.
    """


class DescriptorError(ReportError):
    """A HID report descriptor that cannot be parsed, or that has no field posbridge needs (Decoded Data)."""


class DecoderUnsupported(ScannerError, ValueError):
    """The configured camera decoder cannot read a configured format (or no format is configured).

    A configuration error: retrying will not help, changing ``decoder`` or ``formats`` will.
    """


class DecoderUnavailable(ScannerError, RuntimeError):
    """The camera decoder's library cannot be loaded on this machine (e.g. pyzbar without libzbar0)."""


class CardRejected(ScannerError, ValueError):
    """Raised by ``CardRead.require()``: the text is not a member card. ``read`` holds the whole
    :class:`posbridge.cards.CardRead`, ``str()`` the reason."""

    def __init__(self, read: CardRead) -> None:
        super().__init__(read.error or "rejected")
        self.read = read
