"""The running bridge as the local API and the status page see it: every part, and what a person is shown.

:mod:`posbridge.daemon` builds a :class:`Bridge` and hands it to :func:`posbridge.api.create_app`; the routes
read only what is declared here. Nothing in this module starts or stops anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from posbridge import __version__
from posbridge.acceptance import InvoiceDesk
from posbridge.cloud import CloudClient
from posbridge.config import Settings
from posbridge.db import Database
from posbridge.dbguard import DatabaseGuard
from posbridge.members import Members
from posbridge.metrics import Metrics
from posbridge.outbox import NEEDS_A_PERSON, Outbox
from posbridge.replay import Replayer

if TYPE_CHECKING:
    from posbridge.outputs import Outputs
    from posbridge.scanners.hub import ScanHub
    from posbridge.scanners.manager import ScannerManager


@dataclass
class Bridge:
    """Every running part. ``scanners`` is None when none are configured (or before they start)."""

    settings: Settings
    database: Database
    outbox: Outbox
    cloud: CloudClient
    replayer: Replayer
    members: Members
    desk: InvoiceDesk
    metrics: Metrics
    scan_hub: "ScanHub"
    scanners: "ScannerManager | None" = None
    outputs: "Outputs | None" = None
    started_at: float = field(default_factory=time.time)
    guard: DatabaseGuard | None = None

    def scanner_status(self) -> list[dict[str, Any]]:
        if self.scanners is None:
            return []
        return [s.as_dict() for s in self.scanners.status()]

    def status(self) -> dict[str, Any]:
        """What ``/v1/status`` shows. Never a token, never a full card number. Blocking (reads the database)."""
        stats = self.outbox.stats()
        replay = self.replayer.status()
        return {
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "queue": stats["depth"],
            "needs_person": sum(stats["depth"][state] for state in NEEDS_A_PERSON),
            "oldest_pending_age_seconds": stats["oldest_pending_age_seconds"],
            "delivery": {
                "paused": replay["paused"],
                "paused_reason": replay["paused_reason"],
                "paused_cause": replay["paused_cause"],
                "paused_since": replay["paused_since"],
                "unrecorded_outcomes": replay["unrecorded_outcomes"],
                "last_delivery_at": replay["last_delivery_at"],
                "last_delivery_result": replay["last_delivery_result"],
                "next_attempt_not_before": replay["hold_until"],
                "hold_reason": replay["hold_reason"],
                "in_flight": replay["in_flight"],
            },
            "cloud": {
                "base_url": self.cloud.base_url,
                "account": self.settings.cloud.account,
                **self.cloud.health.as_dict(),
                "summary": self.cloud.health.summary(),
                "auth_problem": replay["paused_reason"] if replay["paused_cause"] == "token"
                else self.cloud.health.token_refused,
            },
            "members": {"lookups": dict(self.members.counters)},
            "database": self.database_status(),
            "scanners": self.scanner_status(),
            "outputs": self.outputs.status() if self.outputs is not None else [],
        }

    def database_status(self) -> dict[str, Any]:
        if self.guard is not None:
            return self.guard.status()
        return {"path": str(self.settings.storage.path), "last_error": self.database.writer.last_error}

    def status_line(self) -> str:
        """One line for systemd's ``STATUS=``. Blocking (reads the database)."""
        stats = self.outbox.stats()
        replay = self.replayer.status()
        oldest = stats["oldest_pending_age_seconds"]
        if replay["paused_cause"] == "token":
            cloud = "paused: token refused"
        elif replay["paused_cause"] == "database":
            cloud = "paused: the database cannot record deliveries"
        else:
            cloud = self.cloud.health.summary()
        problem = self.guard.ready_problem() if self.guard is not None else None
        age = f", oldest {int(oldest)}s" if oldest is not None else ""
        refusing = "; NOT TAKING INVOICES: " + problem if problem else ""
        return f"{stats['depth']['pending']} pending{age}; {cloud}{refusing}"
