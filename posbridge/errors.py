"""Every error posbridge raises on purpose, in one tree.

Callers catch what they can handle, at the level they can handle it: ``except CloudError`` for "the cloud did
not take it", ``except StorageError`` for "the disk did not take it", ``except InputError`` for "what came in
from outside is not usable". Messages are written for the person who reads them in the shop at 7 a.m.: they
say what is wrong and what to do, and never contain a token.

Lower-level errors (httpx's, sqlite3's) are mapped to these once, at the boundary that meets them
(:mod:`posbridge.cloud`, :mod:`posbridge.writer`), by table; nothing else looks at raw status codes or SQLite
messages. The tree (httpx's ``_exceptions.py`` is the model)::

    PosbridgeError
    ├── ConfigError                 the configuration cannot be used (names the file and each key)
    ├── StartupError                the daemon cannot start (port taken, database unusable)
    │   └── DatabaseNotRecognised   not the database the marker remembers: a person decides (exit 3)
    ├── InstallError                `posbridge service install` cannot start
    ├── CloudError                  the cloud did not take a request        (status, body, content_type)
    │   ├── CloudUnavailable        transient: try later                    (+ retry_after)
    │   ├── CloudRejected           a permanent 4xx: a person must look
    │   └── CloudAuthError          401/403: the token, not the request
    ├── StorageError                the database did not store or read      (+ kind, sqlite_code)
    │   ├── StorageFull             disk full or file-size limit
    │   ├── StorageReadOnly         file or directory not writable
    │   ├── StorageCorrupt          not a database / malformed
    │   ├── StorageBusy             another process holds the lock
    │   ├── StorageIOError          the disk failed a read or write
    │   ├── StorageLost             the database file was deleted or replaced under the running daemon
    │   ├── MarkerUnreadable        the database marker file is damaged or not ours
    │   └── StorageLow              less free disk than [storage] min_free_bytes: new invoices refused
    ├── TokenError                  a token is missing, unusable or cannot be stored
    │   ├── TokenMissing
    │   ├── TokenStoreUnavailable
    │   └── InvalidToken            (also a ValueError)
    ├── InputError                  what came in from outside cannot be used (also a ValueError)
    │   ├── InvoiceRefused          a POS's invoice request: bad media type, size, or not a JSON object
    │   ├── CardRejected            scanned or typed text that is not a card
    │   └── UnreadableInvoice       the sandbox cloud cannot read an invoice (its 422)
    ├── ScannerError                a scanner, its reports or its decoder
    │   ├── ScannerUnavailable      cannot be opened now (absent, permission, busy): retried with backoff
    │   ├── ScannerGone             went away while open: reopened
    │   │   └── SourceExhausted     ended for good (stdin at EOF, a finished video)
    │   ├── ReportError             a USB report that cannot be (also a ValueError)
    │   │   └── DescriptorError     a HID report descriptor without the fields posbridge needs
    │   ├── DecoderUnsupported      the camera decoder cannot read a configured format
    │   └── DecoderUnavailable      the decoder's library is missing on this machine
    ├── ApiError                    raised by a route to answer a JSON error (status, code, detail)
    ├── OutputError                 a keystroke output cannot type
    │   └── UntypableText           the till's layout cannot type a character; nothing was typed
    └── GadgetError                 the USB keyboard gadget cannot be set up through configfs
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from posbridge.cards import CardRead


class PosbridgeError(Exception):
    """Base of every error posbridge raises on purpose."""


# --- set-up ----------------------------------------------------------------------------------------------


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


class StartupError(PosbridgeError):
    """The daemon cannot start (port taken, database unusable). The message says what to change."""


class DatabaseNotRecognised(StartupError):
    """The database is missing, empty, replaced or lacks its latest invoices compared with the marker
    (posbridge/marker.py): a person must put the right file back or accept a new one. The CLI exits 3, which the
    unit does not restart (restarting cannot fix it)."""


class InstallError(PosbridgeError):
    """The installation cannot start (files missing from the checkout, no posbridge command found)."""


# --- the cloud -------------------------------------------------------------------------------------------


class CloudError(PosbridgeError):
    """The cloud did not take a request. ``status``, ``body`` and ``content_type`` are the cloud's answer
    when there was one (``status`` None: no HTTP answer at all)."""

    def __init__(self, message: str, *, status: int | None = None, body: bytes = b"",
                 content_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.content_type = content_type


class CloudUnavailable(CloudError):
    """The cloud could not be reached in time or answered a transient error (5xx, 408, 409, 425, 429).

    Worth retrying later. ``retry_after`` is the server's own hint in seconds, when it gave a valid one.
    """

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None,
                 body: bytes = b"", content_type: str | None = None) -> None:
        super().__init__(reason, status=status, body=body, content_type=content_type)
        self.reason = reason
        self.retry_after = retry_after


class CloudRejected(CloudError):
    """The cloud refused the request for good (a 4xx other than 401/403/408/409/425/429).

    Retrying the same bytes will not help; a person has to look at ``body``.
    """

    status: int

    def __init__(self, status: int, body: bytes, content_type: str | None) -> None:
        super().__init__(f"the cloud refused it with HTTP {status}", status=status, body=body,
                         content_type=content_type)


class CloudAuthError(CloudError):
    """The cloud refused the bridge's token (401/403). Nothing is wrong with the request itself."""

    status: int

    def __init__(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        super().__init__(f"the cloud refused the API token (HTTP {status}); check it with `posbridge token check`",
                         status=status, body=body, content_type=content_type)


# --- the database ----------------------------------------------------------------------------------------


class StorageError(PosbridgeError):
    """The database could not store or read something. ``kind`` names the class of failure for programs
    (``full``, ``read_only``, ``corrupt``, ``busy``, ``io``, ``lost``, ``low_space``, ``other``);
    ``sqlite_code`` is SQLite's own result code when SQLite raised it."""

    kind = "other"

    def __init__(self, message: str, *, sqlite_code: int | None = None) -> None:
        super().__init__(message)
        self.sqlite_code = sqlite_code


class StorageFull(StorageError):
    """The disk is full, or the process hit its file-size limit."""

    kind = "full"


class StorageReadOnly(StorageError):
    """The database file or its directory is read-only for the service user."""

    kind = "read_only"


class StorageCorrupt(StorageError):
    """The file is not a database, or its pages are malformed."""

    kind = "corrupt"


class StorageBusy(StorageError):
    """Another process holds the database lock for longer than the busy timeout."""

    kind = "busy"


class StorageIOError(StorageError):
    """The disk failed a read or a write (a failing SD card or SSD, a vanished file)."""

    kind = "io"


class StorageLost(StorageError):
    """The database path no longer leads to the file the daemon has open (deleted, or another file moved into
    its place). The open file still works, but nothing written to it would survive a restart."""

    kind = "lost"


class MarkerUnreadable(StorageError):
    """The database marker file (posbridge/marker.py) exists but is not a marker (damaged, or not ours)."""

    kind = "marker"


class StorageLow(StorageError):
    """The disk has less free space than ``[storage] min_free_bytes``: new invoices are refused early, so the
    space left is enough to record the deliveries that drain the queue."""

    kind = "low_space"


# --- tokens ----------------------------------------------------------------------------------------------


class TokenError(PosbridgeError):
    """A token is missing, cannot be one, or cannot be stored."""


class TokenMissing(TokenError):
    """A token the bridge needs is not configured anywhere it looks."""


class TokenStoreUnavailable(TokenError):
    """The token could not be written to (or removed from) the system keyring, typically because the machine
    has none (headless till). The message says where to put the token instead."""


class InvalidToken(TokenError, ValueError):
    """The value given as a token cannot be one (empty, spaces inside, control characters, too long)."""


# --- input from outside ----------------------------------------------------------------------------------


class InputError(PosbridgeError, ValueError):
    """Something that came in from outside (a request, a scan, a captured report) cannot be used.
    ``code`` is a stable name for programs; ``str()`` is the reason for people."""

    code = "invalid_input"


class InvoiceRefused(InputError):
    """The POS's invoice request cannot be taken as it is; nothing was stored. ``code`` says why:
    ``unsupported_media_type``, ``payload_too_large``, ``invalid_json`` or ``bad_request``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class CardRejected(InputError):
    """Raised by :meth:`posbridge.cards.CardRead.require`; ``read`` holds the whole result, ``str()`` the
    reason."""

    code = "invalid_member_id"

    def __init__(self, read: "CardRead") -> None:
        super().__init__(read.error or "rejected")
        self.read = read


class UnreadableInvoice(InputError):
    """The sandbox cloud cannot read an invoice (not a JSON object with a numeric total); the message is the
    422 ``detail``."""

    code = "unreadable_invoice"


# --- HTTP answers ----------------------------------------------------------------------------------------


class ApiError(PosbridgeError):
    """Raised from a local API route to answer ``status`` with ``{"error": code, "detail": detail}``."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


# --- keystroke outputs -----------------------------------------------------------------------------------


class OutputError(PosbridgeError):
    """A keystroke output cannot type (device missing, permission, the till not reading the keyboard)."""


class UntypableText(OutputError):
    """Text holds characters the till's keyboard layout cannot type. Nothing was typed."""

    def __init__(self, layout: str, characters: list[str]) -> None:
        self.layout = layout
        self.characters = characters
        shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in characters)
        super().__init__(f"the {layout} keyboard layout cannot type {shown}; nothing was typed "
                         "(check the output's layout = the till's keyboard layout, or use what = \"member_id\")")


class GadgetError(PosbridgeError):
    """The USB keyboard gadget cannot be set up or removed through configfs. Says which file and what to do."""


# --- scanners -------------------------------------------------------------------------------------------
# Drivers raise ScannerUnavailable / ScannerGone / SourceExhausted and the supervisor decides what happens next;
# the others are answers about one input (a report, a descriptor, a decoder setting). Messages name the device,
# byte or key that is wrong and the fix. (Card text that is not a card: CardRejected, under InputError.)


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
