"""uvicorn's own log lines, at most once a minute each: what a crowded network must not turn into a flood.

A slowloris of a thousand connections or a device hammering the bridge with garbage would otherwise make
uvicorn write one line (often with a traceback) per connection: hundreds of megabytes of journal on a till's
small disk, and the one line that matters buried. The counting is :class:`posbridge.logs.LogThrottle`'s: the
next line of a kind says how many were held back.
"""

from __future__ import annotations

import logging
from typing import Any

from posbridge.logs import LogThrottle


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
            self._throttle.log(self._logger, level, msg, *args, key=f"uvicorn:{msg}",
                               exc_info=kwargs.get("exc_info"))

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


__all__ = ["ThrottledLogger"]
