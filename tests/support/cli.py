"""The command line as a technician runs it: ``posbridge ARGS`` in a subprocess of this virtualenv's Python."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence

from tests.support.paths import REPO


def run_posbridge(args: Sequence[str], *, env: Mapping[str, str] | None = None, input: str | None = None,
                  prefix: Sequence[str] = (), timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``posbridge ARGS`` from the repository root; ``prefix`` runs it under a wrapper (``setpriv ...``).
    Output is captured as text; the exit status is the caller's to check."""
    command = [*prefix, sys.executable, "-m", "posbridge.cli", *args]
    return subprocess.run(command, cwd=REPO, env=None if env is None else dict(env), input=input,
                          capture_output=True, text=True, timeout=timeout)
