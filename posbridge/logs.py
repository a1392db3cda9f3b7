"""Logging set-up for the daemon and the CLI, with secret redaction built in.

- :func:`setup_logging` installs one handler on the root logger in one of three formats: ``text`` for a
  terminal, ``json`` (one object per line) for log shippers, ``journald`` (``<N>`` priority prefixes that
  journald turns into real priorities). ``auto`` picks ``journald`` under systemd (``$JOURNAL_STREAM`` or
  ``$INVOCATION_ID`` set), else ``text``.
- No token reaches a log: values registered with :func:`posbridge.redaction.register_secret` (every token loaded by
  :mod:`posbridge.secrets` is, see :mod:`posbridge.redaction`), ``_token=`` query values, ``Bearer`` credentials and URL passwords are replaced
  by ``***`` in messages, arguments, exception tracebacks and extra fields. This happens when a record is
  created (covering loggers with their own handlers, like uvicorn's), in a filter on the root handler and
  once more in our formatters.
- Member ids are personal data: log them at INFO through :func:`mask_member`.
- A line that can repeat (a delivery failing every few seconds, a database write failing for every request)
  goes through a :class:`LogThrottle`: the first one is written, repeats within the window are counted, and
  the next line written says how many were held back. A full disk must not become 42,000 log lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import IO, Any, Literal

from posbridge.redaction import redact_text

LogFormat = Literal["text", "json", "journald", "auto"]
LEVELS = ("debug", "info", "warning", "error", "critical")

_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName",
}
_SYSLOG_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_MARK = "_posbridge_redacted"


class LogThrottle:
    """At most one line per key every ``every`` seconds; the line written after a quiet spell says how many
    similar lines were held back (``(37 similar lines not shown in the last 60 s)``).

    The key defaults to the logger and the message template, so ``"invoice %s not delivered"`` for a hundred
    invoices is one line a minute, not a hundred. Give ``key=`` to throttle finer or coarser. Thread-safe
    (the database writer thread logs through one too). At most ``max_keys`` keys are remembered (the oldest
    are forgotten first), so a key made of outside data cannot grow memory.
    """

    def __init__(self, every: float = 60.0, *, max_keys: int = 512, clock: Any = time.monotonic) -> None:
        self.every = every
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[Any, list[float | int]] = {}  # key -> [time last written, held back since]

    def log(self, logger: logging.Logger, level: int, msg: str, *args: Any, key: Any = None,
            exc_info: Any = None) -> bool:
        """Write ``msg % args`` at ``level`` unless a line with the same key was written less than ``every``
        seconds ago (then it is only counted). Returns whether the line was written."""
        if not logger.isEnabledFor(level):
            return False
        key = (logger.name, msg) if key is None else key
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.every:
                entry[1] = int(entry[1]) + 1
                return False
            held = int(entry[1]) if entry is not None else 0
            window = now - entry[0] if entry is not None else 0.0
            self._seen.pop(key, None)
            self._seen[key] = [now, 0]
            while len(self._seen) > self._max_keys:
                del self._seen[next(iter(self._seen))]
        if held:
            msg = f"{msg} (%d similar line{'' if held == 1 else 's'} not shown in the last %.0f s)"
            args = (*args, held, window)
        logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def reset(self, key: Any) -> None:
        """Forget ``key``: the next line with it is written at once (say, after the trouble ended)."""
        with self._lock:
            self._seen.pop(key, None)


def mask_member(member_id: str | None) -> str:
    """A member id fit for INFO logs: ``"OW7K2M9Q"`` -> ``"****2M9Q"``. Ids of 4 characters or fewer are
    fully masked; the mask has a fixed width, so it does not reveal the length either."""
    if not member_id:
        return ""
    text = str(member_id)
    return "****" if len(text) <= 4 else "****" + text[-4:]


class RedactingFilter(logging.Filter):
    """Rewrites a record so that it carries no secret; never drops a record (always returns True)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _MARK, False):
            _redact_extras(record)
            return True
        _redact_record(record)
        _redact_extras(record)
        return True


_FILTER = RedactingFilter()


def install_redaction(handler: logging.Handler) -> None:
    """Add the redacting filter to a handler that is not the root's (idempotent)."""
    if _FILTER not in handler.filters:
        handler.addFilter(_FILTER)


class TextFormatter(logging.Formatter):
    """``2024-05-01 07:02:03,456 WARNING posbridge.replay: message`` for terminals."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class JournaldFormatter(logging.Formatter):
    """``<4>posbridge.replay: message``; every line of a traceback carries the prefix, so journald files
    the whole traceback under the record's priority. Time and host come from journald itself."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        text = redact_text(f"{record.name}: {super().format(record)}")
        return "\n".join(prefix + line for line in text.splitlines() or [""])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, then the record's
    extra fields (``logger.info("sent", extra={"invoice_id": 7})``), ``exc`` and ``stack`` when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return redact_text(json.dumps(entry, ensure_ascii=False, default=str))


def syslog_priority(levelno: int) -> int:
    """Python level -> syslog priority: CRITICAL 2, ERROR 3, WARNING 4, INFO 6, DEBUG (and below) 7."""
    for threshold, priority in _SYSLOG_PRIORITY:
        if levelno >= threshold:
            return priority
    return 7


def resolve_format(fmt: str, environ: Mapping[str, str] | None = None) -> Literal["text", "json", "journald"]:
    """``auto`` -> ``journald`` when running under systemd (``$JOURNAL_STREAM``/``$INVOCATION_ID``), else
    ``text``. Other values are returned as they are; an unknown one raises ``ValueError``."""
    env = os.environ if environ is None else environ
    fmt = fmt.lower()
    if fmt == "auto":
        return "journald" if env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID") else "text"
    if fmt in ("text", "json", "journald"):
        return fmt  # type: ignore[return-value]
    raise ValueError(f"unknown log format {fmt!r}; use text, json, journald or auto")


def setup_logging(level: str = "info", fmt: LogFormat = "auto", *, stream: IO[str] | None = None) -> logging.Handler:
    """Configure the root logger: one handler on ``stream`` (default stderr) in format ``fmt``, at ``level``.

    Idempotent: a second call replaces the handler installed by the first; handlers added by others stay.
    Below DEBUG, httpx/httpcore are held at WARNING (one line per HTTP request drowns the rest).
    Returns the handler (tests read from it; the daemon can ignore it).
    """
    name = level.lower() if isinstance(level, str) else ""
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    numeric = getattr(logging, name.upper())
    chosen = resolve_format(fmt)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter({"text": TextFormatter, "json": JsonFormatter, "journald": JournaldFormatter}[chosen]())
    handler.addFilter(_FILTER)
    handler.set_name("posbridge")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "posbridge"]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    quiet = logging.NOTSET if numeric <= logging.DEBUG else logging.WARNING
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(quiet)
    _install_record_factory()
    return handler


# --- internals --------------------------------------------------------------------------------------------

_factory_lock = threading.Lock()


def _install_record_factory() -> None:
    """Redact every record as it is created, whichever handler later writes it (idempotent)."""
    with _factory_lock:
        current = logging.getLogRecordFactory()
        if getattr(current, "_posbridge", False):
            return

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = current(*args, **kwargs)
            _redact_record(record)
            return record

        factory._posbridge = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)


def _redact_record(record: logging.LogRecord) -> None:
    """Rewrite message, arguments, traceback and stack of ``record`` in place, keeping ``msg``/``args``
    separate when that gives the same text (formatters such as uvicorn's read ``args``)."""
    setattr(record, _MARK, True)
    try:
        message = record.getMessage()
    except Exception:  # bad arguments: logging would print them raw in its error report, so flatten now
        record.msg = redact_text(f"{record.msg} (unformattable arguments: {record.args!r})")
        record.args = ()
        return
    clean = redact_text(message)
    if clean != message:
        if not _redact_keeping_args(record, clean):
            record.msg, record.args = clean, ()
    if record.exc_info and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


def _redact_keeping_args(record: logging.LogRecord, expected: str) -> bool:
    if not isinstance(record.msg, str):
        return False
    msg = redact_text(record.msg)
    args: Any = record.args
    try:
        if isinstance(args, Mapping):
            args = {k: _redact_arg(v) for k, v in args.items()}
            rebuilt = msg % args if args else msg
        elif isinstance(args, tuple):
            args = tuple(_redact_arg(v) for v in args)
            rebuilt = msg % args if args else msg
        else:
            return False
    except Exception:
        return False
    if rebuilt != expected:
        return False
    record.msg, record.args = msg, args
    return True


def _redact_arg(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact_text(value if isinstance(value, str) else str(value))


def _redact_extras(record: logging.LogRecord) -> None:
    for key, value in list(record.__dict__.items()):
        if key not in _STANDARD_ATTRS and isinstance(value, str):
            setattr(record, key, redact_text(value))


def _iso_utc(created: float) -> str:
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"
