"""Prometheus metrics (``/metrics``).

Names follow Prometheus practice: ``posbridge_`` prefix, base units (seconds), ``_total`` counters. Labels come
from small fixed sets (results, states, scanner names from the config, symbologies): never a card number, a
member id or a token.
"""

from __future__ import annotations

import platform
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

from posbridge import __version__
from posbridge.acceptance import RECEIVED_RESULTS
from posbridge.cards import AIM_SYMBOLOGIES
from posbridge.members import RESULTS as MEMBER_RESULTS
from posbridge.replay import Outcome

DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

ATTEMPT_RESULTS = ("sent", "retry", "rejected", "paused", "error")
ERROR_CLASSES = ("unavailable", "auth", "rejected")

#: Symbology label values: AIM names and the camera decoders' names. Anything else is counted as "other", so a
#: driver reporting free text can never grow the number of series.
SYMBOLOGIES = frozenset(token for token, _ in AIM_SYMBOLOGIES.values()) | {
    "qr", "aztec", "pdf417", "code128", "datamatrix", "ean13", "ean8"}



def configure_process() -> None:
    """Process-wide prometheus-client settings, called once by the daemon at start (never at import).

    A ``*_created`` series per counter and histogram doubles what a small till ships for nothing (Prometheus
    finds counter resets itself); this is equivalent to ``PROMETHEUS_DISABLE_CREATED_SERIES=True``."""
    disable_created_metrics()


class Metrics:
    """All of the daemon's metrics, in their own registry (several daemons can live in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.invoices_received = Counter(
            "posbridge_invoices_received", "Invoices POSTed by the POS, by what happened to them",
            ["result"], registry=r)
        self.invoices_sent = Counter("posbridge_invoices_sent", "Invoices the cloud accepted", registry=r)
        self.invoices_rejected = Counter(
            "posbridge_invoices_rejected", "Invoices the cloud refused for good (4xx)", registry=r)
        self.delivery_attempts = Counter(
            "posbridge_delivery_attempts", "Delivery attempts by outcome", ["result"], registry=r)
        self.delivery_seconds = Histogram(
            "posbridge_delivery_duration_seconds", "Time of one delivery attempt, cloud round trip included",
            buckets=DELIVERY_BUCKETS, registry=r)
        self.cloud_errors = Counter(
            "posbridge_cloud_errors", "Cloud errors by class", ["class"], registry=r)
        self.member_lookups = Counter(
            "posbridge_member_lookups", "Member look-ups by result (fresh, stale, miss, not_found, rejected, "
            "provisional, invalid)", ["result"], registry=r)
        self.scans = Counter("posbridge_scans", "Scans by scanner and symbology", ["source", "symbology"],
                             registry=r)
        self.scanner_connected = Gauge(
            "posbridge_scanner_connected", "1 when the scanner is open and readable", ["scanner"], registry=r)
        self.queue_depth = Gauge("posbridge_queue_depth", "Invoices in the outbox by state", ["state"], registry=r)
        self.oldest_pending = Gauge(
            "posbridge_queue_oldest_pending_age_seconds", "Age of the oldest undelivered invoice (0 when none)",
            registry=r)
        self.cloud_reachable = Gauge(
            "posbridge_cloud_reachable", "1 when the last cloud contact worked", registry=r)
        self.delivery_paused = Gauge(
            "posbridge_delivery_paused", "1 while delivery is paused (the cloud refused the token, or the database "
            "cannot record outcomes)", registry=r)
        self.database_ready = Gauge(
            "posbridge_database_ready", "1 while the database can take invoices (not lost, writes work, disk not "
            "below [storage] min_free_bytes)", registry=r)
        build = Info("posbridge_build", "posbridge version and Python", registry=r)
        build.info({"version": __version__, "python": platform.python_version()})
        # every known label value from the start: a dashboard sees 0, not "no data", before the first event
        for result in RECEIVED_RESULTS:
            self.invoices_received.labels(result=result)
        for result in ATTEMPT_RESULTS:
            self.delivery_attempts.labels(result=result)
        for name in ERROR_CLASSES:
            self.cloud_errors.labels(**{"class": name})
        for result in (*MEMBER_RESULTS, "invalid"):
            self.member_lookups.labels(result=result)

    # -- called by the parts --

    def invoice_received(self, result: str) -> None:
        self.invoices_received.labels(result=result).inc()

    def delivery_outcome(self, outcome: Outcome, seconds: float) -> None:
        self.delivery_attempts.labels(result=outcome.result).inc()
        self.delivery_seconds.observe(seconds)
        if outcome.result == "sent":
            self.invoices_sent.inc()
        elif outcome.result == "rejected":
            self.invoices_rejected.inc()
            self.cloud_errors.labels(**{"class": "rejected"}).inc()
        elif outcome.result == "paused":
            self.cloud_errors.labels(**{"class": "auth"}).inc()
        elif outcome.result == "retry":
            self.cloud_errors.labels(**{"class": "unavailable"}).inc()

    def member_lookup(self, result: str) -> None:
        self.member_lookups.labels(result=result).inc()

    def scan(self, source: str, symbology: str | None) -> None:
        label = "unknown" if not symbology else symbology if symbology in SYMBOLOGIES else "other"
        self.scans.labels(source=source, symbology=label).inc()

    # -- exposition --

    def render(self, bridge: Any) -> bytes:
        """Refresh the gauges that are read from state, then render the text format."""
        stats = bridge.outbox.stats()
        for state, count in stats["depth"].items():
            self.queue_depth.labels(state=state).set(count)
        self.oldest_pending.set(stats["oldest_pending_age_seconds"] or 0)
        replay = bridge.replayer.status()
        self.cloud_reachable.set(0 if bridge.cloud.health.reachable is False else 1)
        guard = getattr(bridge, "guard", None)
        self.database_ready.set(0 if guard is not None and guard.ready_problem() else 1)
        self.delivery_paused.set(1 if replay["paused"] else 0)
        for scanner in bridge.scanner_status():
            self.scanner_connected.labels(scanner=scanner["name"]).set(1 if scanner.get("connected") else 0)
        return generate_latest(self.registry)
