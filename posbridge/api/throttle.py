"""Log lines that repeat, at most once a minute each: what a crowded network must not turn into a flood.

A slowloris of a thousand connections, a device hammering the bridge with garbage, or a process out of file
descriptors would otherwise write one line (often with a traceback) per connection or per second: hundreds of
megabytes of journal on a till's small disk, and the one line that matters buried. Each kind of line is written
the first time, then held back for ``LOG_EVERY`` seconds and counted; the count is written with the next line
of that kind, or on its own when the minute ends, so nothing is hidden, only summarised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

LOG_EVERY = 60.0


class LogThrottle:
    """At most one line per ``key`` every ``every`` seconds. Lines held back are counted; the count is logged
    with the next line of that kind, or on its own when the window ends. Use from the event loop only."""

    def __init__(self, logger: logging.Logger, every: float = LOG_EVERY) -> None:
        self._logger = logger
        self._every = every
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()
        self._flush: dict[str, asyncio.TimerHandle] = {}

    def log(self, key: str, level: int, msg: str, *args: Any, **kwargs: Any) -> bool:
        """Log now (True) or count it for later (False)."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._every:
            self._held[key] += 1
            self._schedule_flush(key, level, msg, last + self._every - now)
            return False
        held = self._held.pop(key, 0)
        self._last[key] = now
        if held:
            msg = f"{msg} (and {held} more like it in the previous {self._every:g} s)"
        self._logger.log(level, msg, *args, **kwargs)
        return True

    def _schedule_flush(self, key: str, level: int, msg: str, delay: float) -> None:
        if key in self._flush:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._flush[key] = loop.call_later(max(delay, 0.0), self._flush_held, key, level, msg)

    def _flush_held(self, key: str, level: int, msg: str) -> None:
        self._flush.pop(key, None)
        held = self._held.pop(key, 0)
        if held:
            self._last[key] = time.monotonic()
            summary = msg.split("%", 1)[0].rstrip(" :(")
            self._logger.log(level, "%d more in the last %g s: %s", held, self._every, summary)


class ThrottledLogger:
    """Stands in for uvicorn's ``uvicorn.error`` logger inside the protocol (uvicorn logs a warning per invalid
    request and an error per app exception): the same calls, each message at most once per minute."""

    def __init__(self, throttle: LogThrottle, logger: logging.Logger) -> None:
        self._throttle = throttle
        self._logger = logger

    @property
    def level(self) -> int:
        return self._logger.level

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's own name
        return self._logger.isEnabledFor(level)

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        if level < logging.INFO:
            self._logger.log(level, msg, *args, **kwargs)
        elif self._logger.isEnabledFor(level):
            self._throttle.log(f"uvicorn:{msg}", level, msg, *args, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("exc_info", True)
        self.log(logging.ERROR, msg, *args, **kwargs)

    def critical(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.log(logging.CRITICAL, msg, *args, **kwargs)


__all__ = ["LOG_EVERY", "LogThrottle", "ThrottledLogger"]
