"""The database never disappears silently, and a failing disk never makes delivery loop.

Each test runs the daemon as a process, posts invoices like a POS, breaks the disk or the database the way a
till's breaks (a real full tmpfs, a file the daemon may not write, the state directory deleted, a database
emptied or rolled back), and counts: every invoice the POS got a 2xx for reaches the sandbox cloud, exactly
once; everything else got a 503 and was not stored.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from posbridge.marker import read_marker
from tests.support.cloud_proxy import CloudProxy
from tests.support.daemon import DaemonProcess, bridge_key, invoice
from tests.support.disk import SmallDisk, no_root_override

SHARE_SANDBOX = True  # see conftest.sandbox

MiB = 1024 * 1024


def accepted(sandbox) -> dict[str, dict[str, Any]]:
    return {entry["key"]: entry for entry in sandbox.invoices()}


def delivered_once(sandbox, keys: set[str]) -> bool:
    seen = accepted(sandbox)
    return all(key in seen for key in keys)


def assert_each_delivered_exactly_once(sandbox, keys: set[str]) -> None:
    seen = accepted(sandbox)
    missing = keys - set(seen)
    assert not missing, f"acknowledged but never delivered: {sorted(missing)}"
    for key in keys:
        assert seen[key]["accepted"] == 1 and seen[key]["deliveries"] == 1, (key, seen[key])


def readyz(daemon: DaemonProcess) -> httpx.Response:
    return daemon.client.get("/readyz")


def padded(number: int, size: int) -> dict[str, Any]:
    body = invoice(number)
    body["Notes"] = "x" * size
    return body


def marker_file(daemon: DaemonProcess) -> Path:
    return daemon.workdir / "state-marker" / "posbridge.db.marker.json"


# -- a full disk ------------------------------------------------------------------------------------------


def test_full_disk_refuses_invoices_keeps_the_outcome_in_memory_and_recovers_when_space_is_freed(sandbox, tmp_path):
    disk = SmallDisk(tmp_path / "state", 8 * MiB)
    gate, cloud_back = threading.Event(), threading.Event()

    def rule(key: str):
        if key == bridge_key(1):  # its inline attempt is held at the cloud until the disk is full
            gate.wait(60)
            return None
        if not cloud_back.is_set():
            return 503, {"Content-Type": "application/json"}, b'{"error": "down"}'
        return None

    started = time.monotonic()
    with CloudProxy(sandbox.url, rule) as proxy:
        daemon = DaemonProcess(tmp_path, proxy.url, sandbox.token, sandbox.account,
                               overrides={"storage": {"min_free_bytes": 0}}, wrapper=disk.wrapper())
        try:
            daemon.start()
            disk.attach(daemon.proc.pid)
            first: list[httpx.Response] = []
            poster = threading.Thread(target=lambda: first.append(daemon.post_invoice(invoice(1))))
            poster.start()
            daemon.wait_for(lambda: proxy.count(bridge_key(1)) == 1, what="T1-1 at the cloud")
            acknowledged = set()
            for number in range(2, 7):  # the cloud is down for these: they wait in the queue
                assert daemon.post_invoice(invoice(number)).status_code == 202
                acknowledged.add(f"T1-{number}")
            disk.fill()
            gate.set()  # the cloud accepts T1-1 now; the full disk cannot record it
            poster.join(30)
            assert first and first[0].status_code in (200, 202), first
            acknowledged.add("T1-1")
            status = daemon.wait_for(
                lambda: (s := daemon.status())["delivery"]["paused_cause"] == "database" and s,
                what="delivery paused for the database")
            assert "cannot record" in status["delivery"]["paused_reason"]
            daemon.wait_for(lambda: "T1-1" in accepted(sandbox), what="T1-1 delivered")

            refused = 0
            for number in range(7, 27):
                response = daemon.post_invoice(invoice(number))
                assert response.status_code in (200, 202, 503), response.text
                if response.status_code == 503:
                    assert response.json()["error"] == "storage_unavailable"
                    refused += 1
                else:
                    acknowledged.add(f"T1-{number}")
            assert refused > 0
            ready = daemon.wait_for(lambda: (r := readyz(daemon)).status_code == 503 and r, what="not ready")
            assert "database writes fail" in ready.json()["detail"]
            assert daemon.client.get("/healthz").status_code == 200

            cloud_back.set()
            disk.clear()
            daemon.wait_for(lambda: readyz(daemon).status_code == 200, timeout=30, what="ready again")
            response = daemon.post_invoice(invoice(99))
            assert response.status_code in (200, 202), response.text  # acknowledging resumed, no restart
            acknowledged.add("T1-99")
            daemon.wait_for(lambda: delivered_once(sandbox, acknowledged), timeout=60, what="all delivered")
            assert_each_delivered_exactly_once(sandbox, acknowledged)
            assert daemon.status()["delivery"]["paused"] is False
            log = daemon.log()
            minutes = (time.monotonic() - started) / 60
            assert log.count("database write failed") <= 1 + minutes, "the line is written once a minute at most"
            assert log.count("delivery paused: the database cannot record") == 1
        finally:
            gate.set()
            daemon.stop()
            disk.close()


def test_below_min_free_bytes_new_invoices_are_refused_the_wal_is_cut_and_the_queue_drains(sandbox, tmp_path):
    disk = SmallDisk(tmp_path / "state", 24 * MiB)
    daemon = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account,
                           overrides={"storage": {"min_free_bytes": 8 * MiB}}, wrapper=disk.wrapper())
    try:
        daemon.start()
        disk.attach(daemon.proc.pid)
        sandbox.faults(outage=True)
        acknowledged = set()
        for number in range(1, 61):
            assert daemon.post_invoice(padded(number, 30_000)).status_code == 202
            acknowledged.add(f"T1-{number}")
        wal = disk.inside(daemon.db_path.with_name("posbridge.db-wal"))
        assert wal.stat().st_size > MiB  # the burst sits in the WAL
        disk.fill(leave=5 * MiB)

        response = daemon.post_invoice(invoice(100))
        assert response.status_code == 503, response.text
        assert "min_free_bytes" in response.json()["detail"]
        assert "nearly full" in readyz(daemon).json()["detail"]
        daemon.wait_for(lambda: wal.stat().st_size < 256 * 1024, what="the WAL checkpointed and cut back")

        sandbox.faults(outage=False)  # delivery goes on while new invoices are refused: the queue drains
        daemon.wait_for(lambda: delivered_once(sandbox, acknowledged), timeout=60, what="the queue drained")
        assert daemon.post_invoice(invoice(101)).status_code == 503
        disk.clear()
        assert daemon.post_invoice(invoice(102)).status_code in (200, 202)
        acknowledged.add("T1-102")
        daemon.wait_for(lambda: delivered_once(sandbox, acknowledged), what="the last one")
        assert_each_delivered_exactly_once(sandbox, acknowledged)
    finally:
        daemon.stop()
        disk.close()


# -- a read-only database -----------------------------------------------------------------------------------


def test_read_only_database_is_not_ready_delivers_nothing_it_cannot_record_and_recovers(sandbox, tmp_path):
    daemon = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account, wrapper=no_root_override())
    try:
        daemon.start()
        sandbox.faults(outage=True)
        acknowledged = {f"T1-{n}" for n in range(1, 6)}
        for number in range(1, 6):
            assert daemon.post_invoice(invoice(number)).status_code == 202
        assert daemon.terminate() == 0
        sandbox.faults(outage=False)
        os.chmod(daemon.db_path, 0o444)

        daemon.start(ready=False)
        ready = daemon.wait_for(lambda: (r := readyz(daemon)).status_code == 503 and r, what="not ready")
        assert "read-only" in ready.json()["detail"]
        status = daemon.status()
        assert status["delivery"]["paused_cause"] == "database"
        response = daemon.post_invoice(invoice(6))
        assert response.status_code == 503 and response.json()["error"] == "storage_unavailable", response.text
        assert accepted(sandbox) == {}, "nothing is delivered while no outcome could be recorded"

        for path in daemon.db_path.parent.glob("posbridge.db*"):  # SQLite made -wal/-shm read-only like it
            os.chmod(path, 0o600)
        daemon.wait_for(lambda: readyz(daemon).status_code == 200, timeout=30, what="ready again")
        daemon.wait_for(lambda: delivered_once(sandbox, acknowledged), timeout=30, what="delivered")
        assert daemon.post_invoice(invoice(7)).status_code in (200, 202)
        acknowledged.add("T1-7")
        daemon.wait_for(lambda: daemon.status()["queue"]["sent"] == 6, what="all recorded as sent")
        assert_each_delivered_exactly_once(sandbox, acknowledged)
    finally:
        daemon.stop()


# -- a lost database ----------------------------------------------------------------------------------------


def test_database_deleted_while_running_stops_acknowledging_keeps_delivering_and_is_not_recreated(sandbox, tmp_path):
    daemon = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account)
    try:
        daemon.start()
        sandbox.faults(outage=True)
        acknowledged = {f"T1-{n}" for n in range(1, 6)}
        for number in range(1, 6):
            assert daemon.post_invoice(invoice(number)).status_code == 202
        shutil.rmtree(daemon.db_path.parent)  # the whole state directory

        response = daemon.post_invoice(invoice(6))
        assert response.status_code == 503, response.text
        assert "deleted" in response.json()["detail"]
        assert "deleted" in readyz(daemon).json()["detail"]
        sandbox.faults(outage=False)
        daemon.wait_for(lambda: delivered_once(sandbox, acknowledged), timeout=30, what="delivered from the open file")
        daemon.wait_for(lambda: daemon.status()["queue"]["sent"] == 5, what="recorded in the open file")
        assert "CRITICAL" in daemon.log()
        assert daemon.terminate() == 0
        rescued = sorted((tmp_path / "state-marker").glob("posbridge.db.rescued-*.db"))
        assert len(rescued) == 1

        refused = daemon.start_refused()
        assert refused.returncode == 3  # not restarted by systemd: a person decides
        assert "will not start" in refused.stderr and "does not exist" in refused.stderr
        assert "--accept-new-database" in refused.stderr
        assert not daemon.db_path.exists(), "an empty database was created where one existed"

        daemon.db_path.parent.mkdir()
        shutil.move(rescued[0], daemon.db_path)  # the recovery the message describes
        daemon.start()
        assert daemon.status()["queue"] == {"pending": 0, "sent": 5, "rejected": 0, "held": 0}
        assert_each_delivered_exactly_once(sandbox, acknowledged)
    finally:
        daemon.stop()


def test_emptied_database_is_refused_at_start_doctor_says_so_and_accept_new_database_starts_afresh(sandbox, tmp_path):
    daemon = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account)
    try:
        daemon.start()
        for number in range(1, 4):
            assert daemon.post_invoice(invoice(number)).status_code == 200
        sandbox.faults(outage=True)
        for number in range(4, 6):
            assert daemon.post_invoice(invoice(number)).status_code == 202
        assert daemon.terminate() == 0
        os.truncate(daemon.db_path, 0)

        refused = daemon.start_refused()
        assert refused.returncode == 3, refused.stderr
        assert "is empty" in refused.stderr
        assert "2 invoices acknowledged to the till but not yet delivered" in refused.stderr
        assert daemon.db_path.stat().st_size == 0, "the refused start left the file as it was"

        doctor = daemon.cli("doctor", "--json")
        checks = {check["check"]: check for check in json.loads(doctor.stdout)}
        assert checks["database"]["status"] == "fail", checks["database"]
        assert "is empty" in checks["database"]["detail"]
        assert "integrity ok" not in checks["database"]["detail"]

        sandbox.faults(outage=False)
        daemon.start(args=("--accept-new-database",))
        assert "--accept-new-database" in daemon.log()
        assert daemon.post_invoice(invoice(7)).status_code == 200
        assert list((tmp_path / "state-marker").glob("posbridge.db.marker.replaced-*.json"))
        assert daemon.status()["queue"]["sent"] == 1
    finally:
        daemon.stop()


def test_wal_lost_after_a_crash_is_refused_at_start(sandbox, tmp_path):
    daemon = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account)
    try:
        daemon.start()
        assert daemon.terminate() == 0  # a clean stop: the database file holds its identity
        daemon.start()
        sandbox.faults(outage=True)
        for number in range(1, 4):
            assert daemon.post_invoice(invoice(number)).status_code == 202
        daemon.wait_for(lambda: (m := read_marker(marker_file(daemon))) is not None and m.high_water == 3,
                        what="the marker saw the invoices")
        daemon.kill()
        daemon.db_path.with_name("posbridge.db-wal").unlink()
        daemon.db_path.with_name("posbridge.db-shm").unlink(missing_ok=True)

        refused = daemon.start_refused()
        assert refused.returncode == 3, refused.stderr
        assert "lacks its latest invoices" in refused.stderr
        assert "3 invoices acknowledged" in refused.stderr
    finally:
        daemon.stop()
