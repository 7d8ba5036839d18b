"""How sizes are written for people, everywhere in the app: bytes and parameter counts."""

from __future__ import annotations

GIB = 2**30


def gib(n_bytes: float) -> str:
    """Short form for panels and verdicts: "26.7 GiB", or "512 MiB" below 1 GiB."""
    if abs(n_bytes) < GIB:
        return f"{n_bytes / 2**20:.0f} MiB"
    return f"{n_bytes / GIB:.1f} GiB"


def human_bytes(n: float) -> str:
    """Precise form for the planner's tables: "26.67 GiB", "192.0 KiB", "12 B"."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} GiB" if unit == "GiB" else f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def params(n: float) -> str:
    """A parameter count: "14.32 B", "0.71 M"."""
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


def params_b(n: float | None) -> str:
    """A count given in billions, as the registry has it: "14.3B", "0.7M", "?" when unknown."""
    if n is None:
        return "?"
    return f"{n:.1f}B" if n >= 1 else f"{n * 1000:.1f}M"


def gb(n_bytes: float) -> str:
    """Disk sizes, in the decimal units of hubs and `df -H`: "28.6 GB", "850 MB"."""
    if abs(n_bytes) >= 10**9:
        return f"{n_bytes / 10**9:.1f} GB"
    return f"{n_bytes / 10**6:.0f} MB" if abs(n_bytes) >= 10**8 else f"{n_bytes / 10**6:.1f} MB"
