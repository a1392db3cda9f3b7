"""The counter screen in a real headless browser (Debian's chromium through Playwright), against the daemon as a
process, the sandbox cloud over HTTP and a serial scanner on a pty. Each test saves a screenshot of the state it
reached under test-artifacts/screen/.

One daemon, sandbox and browser serve the module (starting them per test would cost seconds each); every test
opens its own browser context (no shared cookies) and leaves the sandbox's faults cleared.
"""

from __future__ import annotations

import os
import sqlite3

import pytest

from tests.support.browser import REBINDING_NAME, chromium, screenshot, skip_reason
from tests.support.daemon import DaemonProcess, invoice
from tests.support.pty import PtyScanner
from tests.support.sandbox import running_sandbox

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

TIMEOUT_MS = 20_000  # a shared 2-core machine: wait generously for each event, never sleep


@pytest.fixture(scope="module")
def sandbox_m():
    with running_sandbox() as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def scanner_m():
    with PtyScanner() as pty:
        yield pty


@pytest.fixture(scope="module")
def bridge_m(sandbox_m, scanner_m, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("screen")
    daemon = DaemonProcess(workdir, sandbox_m.url, sandbox_m.token, sandbox_m.account,
                           overrides={"members": {"timeout": 1.0}},
                           scanners=[{"name": "counter", "type": "serial", "port": scanner_m.path, "debounce": 0}])
    till = workdir / "hidg0"  # a USB keyboard gadget nobody reads: the pipe holds far more than these tests type
    os.mkfifo(till)
    with daemon.config_path.open("a") as config:
        config.write(f'\n[[outputs]]\nname = "till"\ntype = "hid-gadget"\ndevice = "{till}"\n')
    daemon.start()
    daemon.wait_for(lambda: any(s["connected"] for s in daemon.status()["scanners"]), what="scanner open")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def browser_m():
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser_m, sandbox_m):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser_m.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()
    sandbox_m.clear_faults()


def sign_in(page, bridge) -> None:
    """The way a technician sets a till's browser up once: the token in the form."""
    from playwright.sync_api import expect

    page.goto(bridge.url + "/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", bridge.local_token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#screen")).to_be_visible()
    expect(page.locator("body")).to_have_attribute("data-live", "yes")  # listening before anything is scanned


def cached(bridge, member_id: str) -> bool:
    """The daemon has stored the member's answer in its offline cache (read from its database, read-only)."""
    with sqlite3.connect(bridge.db_path.as_uri() + "?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute("SELECT 1 FROM members WHERE member_id = ?", (member_id,)).fetchone() is not None


def test_the_page_without_a_session_shows_the_login_and_refuses_a_wrong_token(page, bridge_m):
    from playwright.sync_api import expect

    page.goto(bridge_m.url + "/")
    expect(page.locator("#login h1")).to_have_text("Counter screen")
    expect(page.locator("#screen")).to_be_hidden()
    screenshot(page, "login")
    page.fill("#token", "not-the-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("Wrong token")
    expect(page.locator("#screen")).to_be_hidden()


def test_the_page_speaks_the_browsers_language(browser_m, bridge_m):
    from playwright.sync_api import expect

    for locale, title in (("es-ES", "Pantalla de mostrador"), ("pt-PT", "Ecrã de balcão")):
        context = browser_m.new_context(locale=locale)
        page = context.new_page()
        page.goto(bridge_m.url + "/")
        expect(page.locator("#login h1")).to_have_text(title, timeout=TIMEOUT_MS)
        context.close()


def test_a_scan_on_the_serial_scanner_appears_with_the_members_name(page, bridge_m, scanner_m):
    from playwright.sync_api import expect

    sign_in(page, bridge_m)
    scanner_m.scan("]Q1https://mystore.omniwallet.cloud/c/OW7K2M9Q")
    expect(page.locator("#scan-name")).to_have_text("María José Núñez Peña")
    expect(page.locator("#scan-points")).to_have_text("120 points")
    expect(page.locator("#scan-level")).to_have_text("gold")
    expect(page.locator("#scan")).to_have_attribute("data-kind", "ok")
    expect(page.locator("#devices [data-device=counter]")).to_contain_text("connected")
    expect(page.locator("#devices [data-device=till]")).to_have_text("till (keyboard output): connected")
    screenshot(page, "scan")


def test_an_unknown_card_says_so_and_why(page, bridge_m, scanner_m):
    from playwright.sync_api import expect

    sign_in(page, bridge_m)
    scanner_m.scan("ZZ00ZZ00")
    expect(page.locator("#scan-mark")).to_have_text("Unknown card")
    expect(page.locator("#scan")).to_have_attribute("data-kind", "bad")
    expect(page.locator("#devices [data-device=till]")).to_contain_text("last card not typed: member not confirmed")
    screenshot(page, "unknown-card")


def test_an_outage_shows_the_offline_mark(page, bridge_m, scanner_m, sandbox_m):
    from playwright.sync_api import expect

    sign_in(page, bridge_m)
    scanner_m.scan("OW9PL4VC")  # looked up while the cloud is up: now in the cache
    expect(page.locator("#scan-name")).to_have_text("Iñaki Etxeberria Goñi")
    bridge_m.wait_for(lambda: cached(bridge_m, "OW9PL4VC"), what="the member in the cache")  # written after answering
    sandbox_m.faults(outage=True)
    scanner_m.scan("OW9PL4VC")
    expect(page.locator("#scan")).to_have_attribute("data-kind", "offline")
    expect(page.locator("#scan-mark")).to_have_text("Offline — from the cache")
    expect(page.locator("#scan-name")).to_have_text("Iñaki Etxeberria Goñi")
    expect(page.locator("#cloud-state")).to_contain_text("unreachable")
    screenshot(page, "offline")


def test_a_rejected_invoice_is_retried_from_the_page_and_reaches_the_sandbox(page, bridge_m, sandbox_m):
    from playwright.sync_api import expect

    sandbox_m.faults(error_rate=1.0, error_status=422)
    assert bridge_m.post_invoice(invoice(7001, serie="SCR")).status_code in (202, 422)
    bridge_m.wait_for(lambda: bridge_m.status()["queue"]["rejected"] >= 1, what="the invoice rejected")
    sandbox_m.clear_faults()
    sign_in(page, bridge_m)
    row = page.locator("#invoice-rows tr", has_text="Number=7001")
    expect(row).to_contain_text("HTTP 422")
    expect(row).to_contain_text("rejected")
    screenshot(page, "rejected-invoice")
    row.locator("button[data-action=retry]").click()
    expect(row).to_have_count(0)
    bridge_m.wait_for(lambda: sandbox_m.invoice("SCR-7001") is not None, what="the retried invoice at the sandbox")
    screenshot(page, "after-retry")


def test_a_cross_site_post_is_refused(page, bridge_m, sandbox_m):
    from playwright.sync_api import expect

    sandbox_m.faults(error_rate=1.0, error_status=422)
    bridge_m.post_invoice(invoice(7002, serie="SCR"))
    bridge_m.wait_for(lambda: any(line for line in bridge_m.cli("queue", "list", "--state", "rejected").stdout
                                  .splitlines() if "Number=7002" in line), what="the invoice rejected")
    sandbox_m.clear_faults()
    sign_in(page, bridge_m)  # the cashier's browser is signed in...
    row = page.locator("#invoice-rows tr", has_text="Number=7002")
    invoice_id = row.get_attribute("data-invoice")
    # ...and opens a page of another site that posts to the bridge (a classic CSRF form).
    attacker = "http://attacker.example/"
    page.route(attacker, lambda route: route.fulfill(content_type="text/html", body=(
        f'<form id="f" method="POST" action="{bridge_m.url}/screen/invoices/{invoice_id}/drop"></form>'
        '<script>document.getElementById("f").submit()</script>')))
    with page.expect_response(lambda r: "/screen/invoices/" in r.url) as caught:
        page.goto(attacker)
    assert caught.value.status == 403
    expect(page.locator("body")).to_contain_text("csrf_refused")
    screenshot(page, "cross-site-refused")
    shown = bridge_m.cli("queue", "show", "doc:Serie=SCR;Number=7002")
    assert shown.returncode == 0 and '"state": "rejected"' in shown.stdout  # still there, not dropped


def test_a_dns_rebinding_name_gets_nothing_from_the_bridge(page, bridge_m):
    from playwright.sync_api import expect

    response = page.goto(f"http://{REBINDING_NAME}:{bridge_m.port}/metrics")
    assert response is not None and response.status == 421
    expect(page.locator("body")).to_contain_text("host_not_allowed")
    screenshot(page, "dns-rebinding-refused")


def test_make_run_prints_the_counter_screen_and_a_card_typed_in_the_terminal_shows_on_it(browser_m, tmp_path):
    """`make run` is `posbridge run --sandbox`: its banner names the counter screen; the terminal is the scanner."""
    import re
    import subprocess
    import sys

    from playwright.sync_api import expect

    from tests.support.paths import REPO
    from tests.support.sandbox import free_port

    port = free_port()
    config = tmp_path / "run.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\n[logging]\nlevel = "info"\nformat = "text"\n')
    log = (tmp_path / "run.log").open("w")  # logs apart: a pipe nobody reads must not fill up and block the daemon
    process = subprocess.Popen([sys.executable, "-m", "posbridge.cli", "run", "--sandbox", "--config", str(config),
                                "--state-dir", str(tmp_path / "state")], cwd=REPO, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        url = None
        for line in process.stdout:  # the banner comes once the daemon is ready
            found = re.search(r"Counter screen .*: (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url and url.startswith(f"http://127.0.0.1:{port}/?_token="), url
        context = browser_m.new_context(locale="en-GB")
        page = context.new_page()
        page.goto(url)  # the token in the link signs the browser in, then leaves the address bar
        expect(page.locator("body")).to_have_attribute("data-live", "yes", timeout=TIMEOUT_MS)
        assert page.url == f"http://127.0.0.1:{port}/"
        process.stdin.write("OW3HX8RT\n")
        process.stdin.flush()
        expect(page.locator("#scan-name")).to_have_text("Jordi Puig i Ferrer", timeout=TIMEOUT_MS)
        screenshot(page, "make-run")
        context.close()
    finally:
        process.terminate()
        process.wait(20)
        log.close()
