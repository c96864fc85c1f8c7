"""The leases' data volumes on this node: one sparse file per lease, `lease-<id>.img` of
`disk_gib` GiB, attached to its guest as a virtio disk (serial `cvm-data`).

The guest encrypts and authenticates every sector (guest/volume.py): the file holds only
ciphertext and tags. It is made at the first launch, kept while the lease lives (a relaunched
guest opens the same volume with the same key), and removed when the lease is stopped for
good. The files are sparse, so the file system under them must keep room for each to grow
to its full size: a lease whose volume would not fit is refused before it is accepted.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from node_agent.errors import LauncherError

GIB = 2**30
_PREFIX = "lease-"
_SUFFIX = ".img"


class VolumeFiles:
    """The volume files under one directory (`<node data dir>/volumes`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, lease_id: int) -> Path:
        return self.directory / f"{_PREFIX}{lease_id}{_SUFFIX}"

    def ensure(self, lease_id: int, disk_gib: int) -> Path:
        """The lease's volume file, made sparse at `disk_gib` GiB if it does not exist (an
        existing one is kept as it is: it holds the guest's data)."""
        if disk_gib <= 0:
            raise LauncherError(f"lease {lease_id}: a volume needs disk_gib > 0")
        path = self.path(lease_id)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        size = disk_gib * GIB
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LauncherError(f"lease {lease_id}: cannot make its volume: {exc}") from exc
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)  # a hole: nothing allocated until the guest writes
        finally:
            os.close(fd)
        return path

    def remove(self, lease_id: int) -> bool:
        """Delete the lease's volume (its data is gone for good); whether there was one."""
        path = self.path(lease_id)
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed

    def lease_ids(self) -> list[int]:
        found = []
        for path in self.directory.glob(f"{_PREFIX}*{_SUFFIX}"):
            number = path.name.removeprefix(_PREFIX).removesuffix(_SUFFIX)
            if number.isdigit():
                found.append(int(number))
        return sorted(found)

    def allocated_bytes(self, lease_id: int) -> int:
        """What the lease's file takes on disk now (its written blocks), 0 if none."""
        try:
            return self.path(lease_id).stat().st_blocks * 512
        except FileNotFoundError:
            return 0

    def free_bytes(self) -> int:
        """Free space on the file system the volumes live on (for an unprivileged writer)."""
        probe = self.directory
        while not probe.exists():
            probe = probe.parent
        return shutil.disk_usage(probe).free

    def refusal(self, lease_id: int, disk_gib: int, active: Mapping[int, int]) -> str | None:
        """Why this node cannot host the lease's volume (None if it can): every active
        lease's volume (`active`: lease id -> disk_gib) may grow to its full size, so what
        they have yet to allocate, plus this one's, must fit in the free space."""
        if disk_gib <= 0:
            return None
        wanted = {**active, lease_id: disk_gib}
        to_grow = sum(
            max(0, gib * GIB - self.allocated_bytes(lease)) for lease, gib in wanted.items()
        )
        free = self.free_bytes()
        if to_grow <= free:
            return None
        return (
            f"its {disk_gib} GiB volume does not fit: the volumes of this node's leases may"
            f" still grow by {to_grow / GIB:.1f} GiB, and {free / GIB:.1f} GiB are free"
        )
