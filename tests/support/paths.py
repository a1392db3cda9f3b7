"""Where ../shared is: `$POSBRIDGE_SHARED`, else beside the repository (CI clones it with shared/ beside)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    env = os.environ.get("POSBRIDGE_SHARED")
    if env:
        return Path(env)
    for candidate in (REPO.parent / "shared", REPO / "shared", Path("/work/shared")):
        if candidate.is_dir():
            return candidate
    raise RuntimeError("cannot find the shared/ directory; set POSBRIDGE_SHARED")
