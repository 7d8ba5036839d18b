"""Plain formatting helpers shared by components."""

from __future__ import annotations


def gib(n_bytes: int | float) -> str:
    """Bytes as GiB with one decimal (MiB below 1 GiB)."""
    if n_bytes < 1024**3:
        return f"{n_bytes / 1024**2:.0f} MiB"
    return f"{n_bytes / 1024**3:.1f} GiB"


def params_b(n: float | None) -> str:
    if n is None:
        return "?"
    return f"{n:.1f}B" if n >= 1 else f"{n * 1000:.1f}M"
