"""What the cloud said, parsed strictly and remembered once: ``parse_retry_after`` and ``CloudHealth``."""

from __future__ import annotations

import logging

import pytest

from posbridge import cloud
from posbridge.cloud import CloudHealth, parse_retry_after
from posbridge.logs import LogThrottle

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


@pytest.mark.parametrize("value, seconds", [
    ("120", 120.0), (" 5 ", 5.0), ("0", 0.0), ("000017", 17.0),
    ("Fri, 15 Jan 2027 08:01:00 GMT", 60.0),   # an HTTP date one minute ahead
    ("Fri, 15 Jan 2027 07:00:00 GMT", 0.0),    # in the past: now
    ("Fri, 15 Jan 2027 08:00:30 -0000", 30.0),
])
def test_retry_after_in_seconds_or_as_an_http_date(value, seconds):
    assert parse_retry_after(value, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [
    "²",                 # "²".isdigit() is True and int("²") raises: the loop of issue 9
    "١٢",                # Arabic-Indic digits: isdigit() too
    "-5", "1.5", "+3", "5s", "soon", "∞", "NaN",
    "9" * 19,            # beyond any sensible delay (and int()'s digit limit for longer ones)
    "9" * 5000,
    "Fri, 31 Feb 2027 07:28:00 GMT",
    "Mon, 01 Jan 99999 00:00:00 GMT",
    "Fri, 15 Jan 2027 08:01:00 GMT\x00",
])
def test_anything_else_is_ignored_with_a_log_line_and_never_raises(value, caplog, monkeypatch):
    monkeypatch.setattr(cloud, "_odd_headers", LogThrottle(300.0))  # a fresh window for this test
    caplog.set_level(logging.WARNING, logger="posbridge.cloud")
    assert parse_retry_after(value, now=NOW) is None
    assert parse_retry_after(value, now=NOW) is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "neither a number of seconds nor an HTTP date" in lines[0], lines


def test_a_missing_or_empty_header_is_no_hint_and_no_log_line(caplog):
    caplog.set_level(logging.WARNING, logger="posbridge.cloud")
    assert parse_retry_after(None) is None
    assert parse_retry_after("  ") is None
    assert not caplog.records


def test_cloud_health_says_since_when_it_is_unreachable_and_recovers_on_any_answer():
    health = CloudHealth()
    assert health.reachable is None and health.summary() == "cloud not contacted yet"
    health.failed("cannot connect to the cloud")
    down_since = health.since
    health.failed("cannot connect to the cloud")
    assert health.reachable is False and health.since == down_since  # "since" is the first failure
    assert health.summary().startswith("cloud unreachable since ")
    health.answered(503)  # a gateway saying the cloud behind it is down
    assert health.reachable is False
    health.answered(422)  # an answer about the request: the cloud is there
    assert health.reachable is True and health.last_failure is None


def test_cloud_health_remembers_a_refused_token_until_the_cloud_accepts_one():
    health = CloudHealth()
    health.answered(401)
    assert health.reachable is True and "refused the API token" in health.token_refused
    assert health.summary().startswith("cloud refuses the token since")
    health.answered(404)  # the token check's unknown member: the token works
    assert health.token_refused is None
