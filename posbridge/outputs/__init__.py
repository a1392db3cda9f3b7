"""Where a scan goes besides the event stream: keystrokes typed into the till.

:class:`Outputs` is the one object the daemon holds: built from ``[[outputs]]``, started after the scan hub
exists (``await outputs.start()``), stopped before the hub closes (``await outputs.stop()``), and asked for
``status()`` by ``/v1/status`` and the counter screen. Each output listens to the hub on its own subscription,
so a slow till never slows the event stream or another output.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from posbridge.config import OutputSettings
from posbridge.outputs.gadget import HidGadgetOutput
from posbridge.outputs.output import KeyboardOutput
from posbridge.outputs.uinput import UinputOutput

KINDS: dict[str, type[KeyboardOutput]] = {"uinput": UinputOutput, "hid-gadget": HidGadgetOutput}


def build(settings: OutputSettings) -> KeyboardOutput:
    return KINDS[settings.type](settings)


class Outputs:
    """Every enabled output, started and stopped together."""

    def __init__(self, settings: list[OutputSettings], hub: Any) -> None:
        self.outputs = [build(s) for s in settings if s.enabled]
        self._hub = hub
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        """Subscribe each output to the hub (scans published from now on are typed) and open its device."""
        for output in self.outputs:
            subscription = self._hub.subscribe()
            await output.open()
            self._tasks.append(asyncio.create_task(output.run(subscription), name=f"output {output.name}"))

    async def stop(self) -> None:
        """Stop typing (a scan being typed is finished by its worker thread) and close the devices."""
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for output in self.outputs:
            await output.close()

    def status(self) -> list[dict[str, Any]]:
        return [output.status() for output in self.outputs]


__all__ = ["KINDS", "Outputs", "build"]
