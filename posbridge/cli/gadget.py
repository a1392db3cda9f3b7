"""`posbridge gadget setup|remove`: make this board a USB keyboard for the till (``type = "hid-gadget"``).

Each step prints one line ("...: changed", "...: already done", "would ..." with ``--dry-run``), so a
technician can run it again after a failure and see what is left. Exit 0 when every step succeeded, 1 when one
failed, 2 on wrong usage (not root). See drivers/README.md for the boot configuration (dtoverlay=dwc2).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from posbridge.cli.common import command_group, fail

gadget_app = command_group(
    "gadget",
    "Make this Linux board a USB keyboard for the till (configfs, libcomposite): the hid-gadget output types into "
    "it. Needs a board with a USB device port (Raspberry Pi 4/5, Zero 2 W) and dtoverlay=dwc2.",
)

DryRun = Annotated[bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")]
Root = Annotated[Optional[Path], typer.Option(
    "--root", file_okay=False, help="Work under this directory instead of / (image building, tests); modprobe is "
    "skipped and the configfs tree is a plain directory.")]
Udc = Annotated[Optional[str], typer.Option(
    "--udc", help="USB device controller to bind to (a name in /sys/class/udc). Default: the first one.")]


def _gadget(root: Path | None, dry_run: bool, udc: str | None = None):  # type: ignore[no-untyped-def]
    from posbridge.outputs.configfs import Gadget

    if root is None and not dry_run and os.geteuid() != 0:
        fail("changing the USB gadget needs root: sudo posbridge gadget ...", code=2)
    return Gadget(root.absolute() if root else Path("/"), dry_run=dry_run, udc=udc,
                  report=lambda step: typer.echo(step.line(), err=step.outcome == "failed"))


@gadget_app.command("setup")
def setup(dry_run: DryRun = False, root: Root = None, udc: Udc = None) -> None:
    """Create the keyboard gadget and bind it to the USB device controller. Safe to run again (idempotent);
    run it at every boot (configfs is not kept across reboots), e.g. from a systemd unit before posbridge."""
    from posbridge.errors import GadgetError

    gadget = _gadget(root, dry_run, udc)
    try:
        gadget.setup()
    except GadgetError:
        raise typer.Exit(1)
    if not dry_run:
        typer.echo("the till sees a USB keyboard while this board's USB device port is plugged into it; "
                   "configure [[outputs]] type = \"hid-gadget\" (device /dev/hidg0)")


@gadget_app.command("remove")
def remove(dry_run: DryRun = False, root: Root = None) -> None:
    """Unbind and delete the keyboard gadget (the till sees the keyboard unplugged)."""
    from posbridge.errors import GadgetError

    gadget = _gadget(root, dry_run)
    try:
        gadget.remove()
    except GadgetError:
        raise typer.Exit(1)
