"""An Omniwallet-compatible cloud that runs locally: demo members, points, de-duplication, fault injection.

Public API:

- `create_app(token, account, *, members=None, faults=None) -> FastAPI`
- `serve(host, port, token, account, **faults)` (foreground, used by `posbridge sandbox`)
- `EmbeddedSandbox(token, account, host="127.0.0.1", port=0)` with `start()`, `stop()`, `url`, `state`
- `SandboxState`, `Faults`, `Member`, `demo_members()`
"""

from __future__ import annotations

from posbridge.sandbox.app import create_app
from posbridge.sandbox.demo import DEMO_CARD_NUMBER, DEMO_MEMBER_ID, demo_members
from posbridge.sandbox.server import EmbeddedSandbox, serve
from posbridge.sandbox.state import Faults, Member, SandboxState

__all__ = [
    "DEMO_CARD_NUMBER", "DEMO_MEMBER_ID", "EmbeddedSandbox", "Faults", "Member", "SandboxState",
    "create_app", "demo_members", "serve",
]
