"""Disks that fail the way a till's do: small and full, or read-only to the daemon.

``SmallDisk`` is a real tmpfs of a few MiB where the daemon keeps its state directory, so "disk full" is the
kernel's own ENOSPC and ``statvfs`` sees the real free space. As root it is mounted directly; otherwise the
daemon is started inside a user and mount namespace (``unshare``) that mounts it, and the test reaches the
files through ``/proc/<pid>/root``. ``ballast`` files fill it and are deleted to free space again.

``no_root_override()`` is a command prefix that takes root's power to ignore file modes away from the daemon
(as root in a test, a 0444 file would still be writable); as another user it is empty.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHUNK = 64 * 1024


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None and os.environ.get("POSBRIDGE_TEST_DISK") != "ns"


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


class SmallDisk:
    """A ``size``-byte tmpfs at ``where`` for a daemon's state directory; see the module docstring."""

    def __init__(self, where: Path, size: int) -> None:
        self.where = where
        self.size = size
        self.pid: int | None = None
        where.mkdir(parents=True, exist_ok=True)
        if _can_mount():
            self.mode = "mount"
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "posbridge-test", str(where)],
                           check=True)
        elif _can_unshare():
            self.mode = "namespace"
        else:
            pytest.skip("needs root (to mount a small tmpfs) or user namespaces (unshare) for a real full disk")

    def wrapper(self) -> list[str]:
        """The command prefix the daemon runs under (mounts the tmpfs in its own namespace when not root)."""
        if self.mode == "mount":
            return []
        script = f'mount -t tmpfs -o size={self.size},mode=0755 posbridge-test "$0" && exec "$@"'
        return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, str(self.where)]

    def attach(self, pid: int) -> None:
        """The daemon process whose view of the disk the test uses (namespace mode)."""
        self.pid = pid

    def inside(self, path: Path) -> Path:
        """``path`` as the daemon sees it."""
        if self.mode == "mount":
            return path
        assert self.pid is not None, "attach() the daemon first"
        return Path(f"/proc/{self.pid}/root") / path.relative_to("/")

    def free(self) -> int:
        info = os.statvfs(self.inside(self.where))
        return info.f_bavail * info.f_frsize

    def fill(self, leave: int = 0) -> int:
        """Write ballast until at most ``leave`` bytes are free (0: until the disk says ENOSPC); returns the
        bytes written."""
        written = 0
        index = 0
        while True:
            target = self.free() - leave
            if target <= 0:
                return written
            path = self.inside(self.where) / f"ballast-{index}"
            index += 1
            with open(path, "wb", buffering=0) as handle:
                try:
                    while target > 0:
                        done = handle.write(b"\0" * min(CHUNK, target)) or 0
                        written += done
                        target -= done
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    return written

    def clear(self) -> None:
        """Delete every ballast file."""
        for path in self.inside(self.where).glob("ballast-*"):
            path.unlink()

    def close(self) -> None:
        if self.mode == "mount":
            subprocess.run(["umount", "-l", str(self.where)], check=False)


def no_root_override() -> list[str]:
    """A prefix that makes file modes apply to a daemon run as root (drops CAP_DAC_OVERRIDE); empty for
    other users, to whom they apply anyway."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run the daemon without root's file-mode override")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
