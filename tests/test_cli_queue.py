"""`posbridge queue status|list|show|retry|drop|export`, run as real subprocesses on a database the daemon wrote.

The daemon takes two invoices during a sandbox outage and is stopped: they stay pending, which is what a
technician finds on a till whose internet is down.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.cli import run_posbridge
from tests.support.daemon import DaemonProcess, invoice
from tests.support.sandbox import SandboxProcess


@pytest.fixture(scope="module")
def till(shared_sandbox: SandboxProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(tmp_path_factory.mktemp("queue-cli"), shared_sandbox.url, shared_sandbox.token,
                           shared_sandbox.account)
    shared_sandbox.faults(outage=True)
    daemon.start()
    for number in (1, 2):
        assert daemon.post_invoice(invoice(number, serie="T 9")).status_code == 202
    daemon.stop()
    shared_sandbox.faults(outage=False)
    yield daemon


def test_status_counts_the_pending_invoices(till):
    done = till.cli("queue", "status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["depth"] == {"pending": 2, "sent": 0, "rejected": 0, "held": 0}


def test_show_finds_an_invoice_by_the_key_as_a_person_types_it(till):
    done = till.cli("queue", "show", "doc:Serie=T 9;Number=1")  # stored percent-encoded, as it is sent
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["key"] == "doc:Serie=T%209;Number=1" and shown["state"] == "pending"
    assert json.loads(shown["body"]) == invoice(1, serie="T 9")


@pytest.mark.parametrize("ident", ["999", "99999999999999999999999", "²", "../../etc/passwd", "T1\x7f", "x" * 5000,
                                   "-", "' OR 1=1 --"])
def test_show_of_something_that_is_no_invoice_says_so_and_exits_1(till, ident):
    done = till.cli("queue", "show", ident)
    assert done.returncode == 1
    assert "no invoice with id or key" in done.stderr
    assert "Traceback" not in done.stderr


def test_list_refuses_an_unknown_state_naming_the_valid_ones(till):
    done = till.cli("queue", "list", "--state", "lost")
    assert done.returncode == 2
    assert "pending, sent, rejected" in done.stderr and "'lost'" in done.stderr


@pytest.mark.parametrize("limit", ["0", "-5", "many", "100000000000000000000000"])
def test_list_refuses_a_nonsense_limit(till, limit):
    done = till.cli("queue", "list", "--limit", limit)
    assert done.returncode == 2
    assert "--limit" in done.stderr and "Traceback" not in done.stderr


def test_drop_of_a_pending_invoice_needs_yes_and_keeps_it(till):
    done = till.cli("queue", "drop", "doc:Serie=T 9;Number=2")
    assert done.returncode == 1
    assert "still pending delivery" in done.stderr
    assert till.cli("queue", "show", "doc:Serie=T 9;Number=2").returncode == 0


def test_export_writes_every_invoice_with_its_exact_body(till, tmp_path: Path):
    target = tmp_path / "outbox.jsonl"
    done = till.cli("queue", "export", "--output", str(target))
    assert done.returncode == 0, done.stderr
    assert f"exported 2 invoices to {target}" in done.stderr
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [json.loads(row["body"]) for row in rows] == [invoice(1, serie="T 9"), invoice(2, serie="T 9")]


def test_export_to_a_place_that_cannot_be_written_names_the_file(till, tmp_path: Path):
    target = tmp_path / "no-such-dir" / "outbox.jsonl"
    done = till.cli("queue", "export", "--output", str(target))
    assert done.returncode == 1
    assert f"cannot write {target}" in done.stderr and "Traceback" not in done.stderr


def test_status_without_a_database_says_where_it_looked(till, tmp_path: Path):
    config = tmp_path / "posbridge.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "nothing-here.db"}"\n')
    done = run_posbridge(["queue", "status", "--config", str(config)], env=till.env)
    assert done.returncode == 1
    assert f"no database at {tmp_path / 'nothing-here.db'}" in done.stderr
    assert not (tmp_path / "nothing-here.db").exists()
