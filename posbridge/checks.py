"""A check in a technician's report: what was looked at, how it went, what was seen, what to do.

Shared by ``posbridge doctor`` (:mod:`posbridge.doctor`) and the scanner checks
(:mod:`posbridge.scanners.doctor`) so each can be read without the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    check: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def passed(checks: list[Check]) -> bool:
    """True when no check failed (warnings are allowed)."""
    return all(c.status != "fail" for c in checks)


__all__ = ["Check", "Status", "passed"]
