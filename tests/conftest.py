"""Shared pytest fixtures: the sandbox cloud and a daemon on it. Paths are in ``tests/support/paths.py``, the command runner in
``tests/support/cli.py``, the daemon under test in ``tests/support/daemon.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess
from tests.support.sandbox import SandboxProcess, running_sandbox


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[SandboxProcess]:
    """One sandbox cloud subprocess for a whole test module (starting one costs about a second)."""
    with running_sandbox() as process:
        yield process


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[SandboxProcess]:
    """The sandbox cloud (token `sbx-token`, account `demo`, demo members).

    A fresh subprocess per test, stopped after it; a module that sets ``SHARE_SANDBOX = True`` gets its
    :func:`shared_sandbox` instead, reset (members, faults, received invoices) before every test, so its tests
    stay independent. Tests that stop or restart the process must not share it.
    """
    if getattr(request.module, "SHARE_SANDBOX", False):
        shared: SandboxProcess = request.getfixturevalue("shared_sandbox")
        assert shared.process.poll() is None, shared.stderr()
        shared.reset()
        yield shared
        return
    with running_sandbox() as process:
        yield process


@pytest.fixture
def bridge(sandbox: SandboxProcess, tmp_path: Path) -> Iterator[DaemonProcess]:
    """The daemon as a process on :func:`sandbox`, with the test defaults of ``tests/support/daemon.py``;
    modules that need other settings define their own ``bridge``."""
    daemon = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account)
    daemon.start()
    yield daemon
    daemon.stop()
