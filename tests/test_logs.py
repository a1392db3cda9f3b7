"""Log formats, format auto-detection, member masking, and that no token ever reaches a log line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from posbridge import logs
from posbridge.logs import install_redaction, mask_member, resolve_format, setup_logging
from posbridge.redaction import register_secret

SECRET = "ow_live_5b1d7e0c9a2f4e61"


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogRecordFactory(),
             logging.getLogger("httpx").level, logging.getLogger("httpcore").level)
    for name in ("JOURNAL_STREAM", "INVOCATION_ID"):
        monkeypatch.delenv(name, raising=False)
    yield
    handlers, level, factory, httpx_level, httpcore_level = saved
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.setLogRecordFactory(factory)
    logging.getLogger("httpx").setLevel(httpx_level)
    logging.getLogger("httpcore").setLevel(httpcore_level)


def capture(fmt: str, level: str = "debug") -> io.StringIO:
    stream = io.StringIO()
    setup_logging(level, fmt, stream=stream)
    return stream


def test_mask_member_keeps_only_the_last_four_characters() -> None:
    assert mask_member("OW7K2M9Q") == "****2M9Q"
    assert mask_member("12345") == "****2345"


def test_mask_member_hides_short_ids_completely_and_passes_empty_through() -> None:
    assert mask_member("M9Q") == "****"
    assert mask_member("2M9Q") == "****"
    assert mask_member("") == ""
    assert mask_member(None) == ""


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "text"),
        ({"JOURNAL_STREAM": "8:12345"}, "journald"),
        ({"INVOCATION_ID": "f00d"}, "journald"),
    ],
)
def test_auto_format_is_journald_under_systemd_and_text_elsewhere(environ: dict[str, str], expected: str) -> None:
    assert resolve_format("auto", environ) == expected
    assert resolve_format("json", environ) == "json"


def test_unknown_format_or_level_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="text, json, journald or auto"):
        resolve_format("xml", {})
    with pytest.raises(ValueError, match="debug, info, warning, error, critical"):
        setup_logging("verbose", "text")


def test_auto_format_follows_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1")
    stream = capture("auto")
    logging.getLogger("posbridge.test").info("hello")
    assert stream.getvalue() == "<6>posbridge.test: hello\n"


def test_journald_format_prefixes_each_level_with_its_syslog_priority() -> None:
    stream = capture("journald")
    log = logging.getLogger("posbridge.replay")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert stream.getvalue().splitlines() == [
        "<7>posbridge.replay: d",
        "<6>posbridge.replay: i",
        "<4>posbridge.replay: w",
        "<3>posbridge.replay: e",
        "<2>posbridge.replay: c",
    ]


def test_journald_format_prefixes_every_line_of_a_traceback() -> None:
    stream = capture("journald")
    try:
        raise RuntimeError("disk full")
    except RuntimeError:
        logging.getLogger("posbridge.db").exception("commit failed")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "<3>posbridge.db: commit failed"
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>RuntimeError: disk full"


def test_json_format_is_one_object_per_line_with_extra_fields() -> None:
    stream = capture("json")
    logging.getLogger("posbridge.outbox").info("queued %s", "inv-7", extra={"invoice_id": 7, "member": "****2M9Q"})
    logging.getLogger("posbridge.outbox").warning("second")
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert first["level"] == "info" and first["logger"] == "posbridge.outbox" and first["msg"] == "queued inv-7"
    assert first["invoice_id"] == 7 and first["member"] == "****2M9Q"
    assert first["ts"].endswith("Z") and first["ts"][10] == "T"
    assert second["level"] == "warning" and "invoice_id" not in second


def test_json_format_carries_the_traceback() -> None:
    stream = capture("json")
    try:
        raise ValueError("bad body")
    except ValueError:
        logging.getLogger("posbridge.api").exception("rejected")
    entry = json.loads(stream.getvalue())
    assert entry["msg"] == "rejected" and "ValueError: bad body" in entry["exc"]


def test_text_format_names_level_and_logger() -> None:
    stream = capture("text", level="info")
    logging.getLogger("posbridge.members").debug("hidden")
    logging.getLogger("posbridge.members").info("member %s ok", mask_member("OW7K2M9Q"))
    line = stream.getvalue().strip()
    assert line.endswith(" INFO posbridge.members: member ****2M9Q ok")
    assert "hidden" not in stream.getvalue()


def test_setup_logging_twice_keeps_a_single_handler() -> None:
    setup_logging("info", "text", stream=io.StringIO())
    stream = capture("text")
    logging.getLogger("posbridge.x").warning("once")
    assert stream.getvalue().count("once") == 1
    assert len([h for h in logging.getLogger().handlers if h.get_name() == "posbridge"]) == 1


@pytest.mark.parametrize("fmt", ["text", "json", "journald"])
def test_registered_token_in_message_and_arguments_is_redacted(fmt: str) -> None:
    register_secret(SECRET)
    stream = capture(fmt)
    log = logging.getLogger("posbridge.cloud")
    log.info("token is " + SECRET)
    log.info("token is %s", SECRET)
    log.info("mapping %(t)s", {"t": SECRET})
    log.info("extra", extra={"header": f"Bearer {SECRET}"})
    output = stream.getvalue()
    assert SECRET not in output
    assert output.count("***") >= 3
    if fmt == "json":
        assert json.loads(output.splitlines()[-1])["header"] == "Bearer ***"


@pytest.mark.parametrize("fmt", ["text", "json", "journald"])
def test_registered_token_inside_an_exception_message_and_traceback_is_redacted(fmt: str) -> None:
    register_secret(SECRET)
    stream = capture(fmt)
    log = logging.getLogger("posbridge.cloud")
    try:
        raise ConnectionError(f"cannot reach https://api.omniwallet.cloud/x?_token={SECRET}")
    except ConnectionError as exc:
        log.exception("delivery failed: %s", exc)
        log.error(exc)
    output = stream.getvalue()
    assert SECRET not in output
    assert "ConnectionError" in output and "_token=***" in output


def test_unregistered_token_query_values_in_urls_are_redacted() -> None:
    stream = capture("text")
    url = httpx.URL("https://api.omniwallet.cloud/agora/member/OW7K2M9Q", params={"_token": "never-seen-before"})
    logging.getLogger("posbridge.cloud").warning("GET %s failed", url)
    logging.getLogger("posbridge.api").info('"GET /agora/invoices?_token=posLocalValue HTTP/1.1" 202')
    output = stream.getvalue()
    assert "never-seen-before" not in output and "posLocalValue" not in output
    assert "/agora/member/OW7K2M9Q?_token=*** failed" in output


def test_redaction_keeps_message_and_arguments_apart_for_formatters_that_read_args() -> None:
    """uvicorn's access formatter unpacks ``record.args``; redaction must not flatten them."""
    register_secret(SECRET)
    capture("text")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    own = logging.getLogger("uvicorn.access.test")
    own.propagate = False
    own.addHandler(Keep())
    try:
        own.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/v1/x?_token={SECRET}", "1.1", 200)
    finally:
        own.handlers.clear()
        own.propagate = True
    (record,) = records
    assert record.args == ("127.0.0.1:5000", "GET", "/v1/x?_token=***", "1.1", 200)
    assert SECRET not in record.getMessage()


def test_records_of_loggers_with_their_own_handlers_are_redacted_too() -> None:
    register_secret(SECRET)
    capture("text")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    own = logging.getLogger("thirdparty.own")
    own.propagate = False
    own.addHandler(handler)
    try:
        own.error("leaking %s", SECRET)
    finally:
        own.removeHandler(handler)
        own.propagate = True
    assert stream.getvalue() == "leaking ***\n"


def test_install_redaction_covers_a_handler_created_before_setup() -> None:
    register_secret(SECRET)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    install_redaction(handler)
    install_redaction(handler)
    assert len(handler.filters) == 1
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "value %s", (SECRET,), None)
    handler.handle(record)
    assert stream.getvalue() == "value ***\n"


def test_unformattable_arguments_are_flattened_without_leaking() -> None:
    register_secret(SECRET)
    stream = capture("text")
    logging.getLogger("posbridge.x").info("two %s %s", SECRET)
    output = stream.getvalue()
    assert SECRET not in output and "unformattable arguments" in output


def test_short_or_blank_secrets_are_not_registered() -> None:
    register_secret("")
    register_secret(None)
    register_secret("ab")
    assert logs.redact_text("a b ab") == "a b ab"


def test_httpx_request_lines_are_quiet_unless_debug() -> None:
    setup_logging("info", "text", stream=io.StringIO())
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    setup_logging("debug", "text", stream=io.StringIO())
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.DEBUG
