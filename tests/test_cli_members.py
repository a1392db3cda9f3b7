"""`posbridge members lookup|cache|purge`, run as real subprocesses against the sandbox cloud and the same
database as the daemon."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.support.cli import run_posbridge
from tests.support.daemon import DaemonProcess

MEMBER = "OW7K2M9Q"
OTHER = "OW3HX8RT"


@pytest.fixture
def setup(sandbox, tmp_path: Path) -> Iterator[DaemonProcess]:
    """A daemon's configuration and environment (cloud token included); not started unless a test does."""
    daemon = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account)
    yield daemon
    daemon.stop()


def lookup(daemon: DaemonProcess, member_id: str) -> tuple[int, dict[str, Any]]:
    done = daemon.cli("members", "lookup", member_id, "--json")
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def cache_json(daemon: DaemonProcess) -> dict[str, Any]:
    done = daemon.cli("members", "cache", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_lookup_shows_the_clouds_answer_and_caches_it_without_a_running_daemon(setup, sandbox):
    code, view = lookup(setup, MEMBER)
    direct = httpx.get(sandbox.member_url(MEMBER), params=sandbox.params)
    assert code == 0
    assert view["status"] == 200 and view["source"] == "cloud" and view["result"] == "fresh"
    assert view["body"] == direct.text
    assert view["headers"]["Content-Type"] == direct.headers["content-type"]
    assert view["headers"]["X-Posbridge-Cache"] == "fresh"
    assert cache_json(setup)["entries"] == 1


def test_lookup_text_output_names_status_source_headers_and_body(setup):
    done = setup.cli("members", "lookup", "httpsÑ--mystore.omniwallet.cloud-c-OW7K2M9Q")
    assert done.returncode == 0, done.stderr
    assert "card:     OW7K2M9Q  (repairs: keyboard layout us->es repaired" in done.stdout
    assert "status:   200" in done.stdout
    assert "source:   cloud" in done.stdout
    assert "X-Posbridge-Cache: fresh" in done.stdout
    assert "María José Núñez Peña" in done.stdout


def test_lookup_during_an_outage_says_the_answer_came_from_the_cache_and_why(setup, sandbox):
    assert lookup(setup, MEMBER)[0] == 0
    sandbox.faults(outage=True)
    code, view = lookup(setup, MEMBER)
    assert code == 0
    assert (view["status"], view["source"], view["result"]) == (200, "cache", "stale")
    assert view["headers"]["X-Posbridge-Cache"] == "stale"
    assert view["headers"]["Age"].isdigit()
    assert "connection" in view["reason"]
    code, view = lookup(setup, OTHER)
    assert code == 1
    assert (view["status"], view["source"], view["result"]) == (503, "policy", "miss")
    assert json.loads(view["body"])["error"] == "cloud_unreachable"


def test_lookup_of_text_that_cannot_be_a_card_shows_the_400_and_asks_no_cloud(setup, sandbox):
    code, view = lookup(setup, "../../etc/passwd")
    assert code == 1
    assert view["status"] == 400 and view["member_id"] is None
    assert json.loads(view["body"])["error"] == "invalid_member_id"
    assert sandbox.requests()["member"] == 0


def test_lookup_without_a_cloud_token_says_where_to_put_one(setup, sandbox):
    env = {key: value for key, value in setup.env.items() if key != "POSBRIDGE_CLOUD_TOKEN"}
    done = run_posbridge(["members", "lookup", MEMBER, "--config", str(setup.config_path)], env=env)
    assert done.returncode == 1
    assert "token" in done.stderr.lower()
    assert sandbox.requests()["member"] == 0


def test_cache_json_shows_entries_and_the_daemons_hit_miss_stale_counters(setup, sandbox):
    setup.start()
    assert setup.get_member(MEMBER).status_code == 200
    assert setup.get_member(OTHER).status_code == 200
    assert setup.get_member("NOSUCHCARD1").status_code == 404
    assert setup.get_member("NOSUCHCARD1").status_code == 404
    sandbox.faults(outage=True)
    assert setup.get_member(MEMBER).headers["x-posbridge-cache"] == "stale"
    assert setup.get_member("OW9PL4VC").status_code == 503

    def counted() -> dict[str, Any] | None:
        summary = cache_json(setup)
        return summary if sum(summary["counters"].values()) == 6 else None

    summary = setup.wait_for(counted, timeout=10, interval=0.3, what="counters written")
    assert summary["entries"] == 2
    assert summary["counters"] == {"fresh": 2, "stale": 1, "miss": 1, "provisional": 0, "not_found": 1,
                                   "not_found_cached": 1, "rejected": 0}
    assert (summary["hits"], summary["misses"], summary["stale"]) == (2, 1, 1)
    assert 0 <= summary["oldest_age_seconds"] < 60
    assert summary["least_recently_used_at"] <= time.time()


def test_cache_text_output_is_readable(setup):
    lookup(setup, MEMBER)
    done = setup.cli("members", "cache")
    assert done.returncode == 0, done.stderr
    assert "cached members:   1" in done.stdout
    assert "hits:" in done.stdout and "misses:" in done.stdout


def test_cache_without_a_database_says_so(setup):
    done = setup.cli("members", "cache")
    assert done.returncode == 1
    assert "no database" in done.stderr


def test_purge_all_forgets_every_cached_member(setup):
    lookup(setup, MEMBER)
    lookup(setup, OTHER)
    kept = setup.cli("members", "purge")
    assert kept.returncode == 0 and "purged 0" in kept.stdout
    done = setup.cli("members", "purge", "--all")
    assert done.returncode == 0, done.stderr
    assert "purged 2 cached members" in done.stdout
    assert cache_json(setup)["entries"] == 0
