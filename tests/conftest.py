"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# ---- sandbox cloud fixtures (owner: sandbox) -------------------------------------------------------------
from tests.support.sandbox import SandboxProcess, running_sandbox


@pytest.fixture
def sandbox() -> Iterator[SandboxProcess]:
    """A fresh sandbox cloud subprocess (token `sbx-token`, account `demo`, demo members), stopped after the test."""
    with running_sandbox() as process:
        yield process
# ---- end of sandbox cloud fixtures -----------------------------------------------------------------------
