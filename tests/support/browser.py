"""A real headless browser for the counter screen: Debian's chromium driven by Playwright.

Never ``playwright install``: the browser is the distribution's ``/usr/bin/chromium`` (``make test`` installs it
when run as root). Without it, or without the playwright package, browser tests are skipped *with the reason*.
Screenshots go to ``test-artifacts/screen/`` at the repository root (gitignored), one per state the tests reach.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.paths import REPO

CHROMIUM = Path(os.environ.get("POSBRIDGE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("POSBRIDGE_TEST_ARTIFACTS", REPO / "test-artifacts")) / "screen"
#: A name an attacker's DNS points at the bridge (DNS rebinding), resolved by the browser itself.
REBINDING_NAME = "rebind.attacker.test"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--host-resolver-rules=MAP {REBINDING_NAME} 127.0.0.1"]


def skip_reason() -> str | None:
    """Why browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return (f"no chromium at {CHROMIUM}: `make test` installs Debian's chromium when run as root "
                "(sudo apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    return None


@contextmanager
def chromium() -> Iterator[object]:
    """A launched browser. Playwright gives each launch a fresh, temporary user-data directory (it refuses an
    explicit ``--user-data-dir``); each test then opens its own context (no shared cookies)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: object, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path
