"""Times and colours for people reading the command line's output.

What callers rely on: ``ago()``/``span()``/``when()`` never raise for None, NaN or a time in the future;
``paint()`` adds colour only when the stream is a terminal and ``NO_COLOR`` is not set
(https://no-color.org), so piped output and files stay plain text. JSON output never goes through here:
``--json`` keeps epoch numbers.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import IO, Literal

import typer

Tone = Literal["ok", "warn", "bad", "dim", "bold"]
_STYLES: dict[Tone, dict[str, object]] = {
    "ok": {"fg": "green"},
    "warn": {"fg": "yellow"},
    "bad": {"fg": "red", "bold": True},
    "dim": {"dim": True},
    "bold": {"bold": True},
}


def span(seconds: float | None) -> str:
    """A duration as a person says it: ``12 s``, ``4 min``, ``3 h``, ``2 days`` (rounded down)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def ago(epoch: float | None, now: float | None = None) -> str:
    """``just now``, ``4 min ago``, ``in 30 s`` (a time still to come), or ``-`` when there is none."""
    if epoch is None or not isinstance(epoch, (int, float)) or not math.isfinite(epoch):
        return "-"
    delta = (time.time() if now is None else now) - epoch
    if -1 < delta < 1:
        return "just now"
    return f"{span(delta)} ago" if delta > 0 else f"in {span(-delta)}"


def clock(epoch: float | None) -> str:
    """Local wall-clock time, ``2025-03-14 09:26:53``, or ``-``."""
    if epoch is None or not isinstance(epoch, (int, float)) or not math.isfinite(epoch):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def when(epoch: float | None, now: float | None = None) -> str:
    """``2025-03-14 09:26:53 (4 min ago)``: the exact time and how long ago, or ``-``."""
    if epoch is None or not isinstance(epoch, (int, float)) or not math.isfinite(epoch):
        return "-"
    return f"{clock(epoch)} ({ago(epoch, now)})"


def colour_wanted(stream: IO[str] | None = None) -> bool:
    """Colour only for a terminal, and never with ``NO_COLOR`` set (to anything)."""
    if "NO_COLOR" in os.environ:
        return False
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def paint(text: str, tone: Tone | None, stream: IO[str] | None = None) -> str:
    """``text`` in the tone's colour when :func:`colour_wanted`, else unchanged."""
    if tone is None or not colour_wanted(stream):
        return text
    return typer.style(text, **_STYLES[tone])  # type: ignore[arg-type]


__all__ = ["ago", "clock", "colour_wanted", "paint", "span", "when"]
