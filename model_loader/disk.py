"""Free space where downloads go, and the refusal of a download that would not fit, before its first byte."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from common import settings as settings_module
from common.errors import DiskSpaceError
from common.units import gb

RESERVE_BYTES = 2**30  # left free after a download (the database, logs and the system need room), ...
RESERVE_FRACTION = 0.05  # ... or 5% of a small disk


@dataclass(frozen=True)
class DiskRoom:
    folder: Path  # the folder asked about, or its nearest existing parent
    free_bytes: int
    total_bytes: int

    @property
    def reserve_bytes(self) -> int:
        return min(RESERVE_BYTES, int(self.total_bytes * RESERVE_FRACTION))

    def fits(self, need_bytes: int) -> bool:
        return need_bytes + self.reserve_bytes <= self.free_bytes


def disk_room(folder: Path) -> DiskRoom:
    """Free and total bytes of the filesystem that holds `folder` (which need not exist yet)."""
    existing = Path(folder).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    return DiskRoom(Path(folder), usage.free, usage.total)


def larger_disk_hint() -> str:
    where = f" (on AutoDL the data disk {settings_module.AUTODL_DATA_DISK})"
    return f"set MOE_CHAT_CACHE_DIR to a folder on a larger disk{where} and restart, or free space there"


def check_room(need_bytes: int, folder: Path, what: str) -> None:
    """Refuse (DiskSpaceError, with the numbers and the fix) when `need_bytes` more would not fit at `folder`."""
    room = disk_room(folder)
    if room.fits(need_bytes):
        return
    spare = f" and {gb(room.reserve_bytes)} to spare" if room.reserve_bytes else ""
    raise DiskSpaceError(f"{what} needs {gb(need_bytes)}{spare}, {gb(room.free_bytes)} free at {folder}: "
                         f"{larger_disk_hint()}.")
