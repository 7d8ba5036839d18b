"""Bound how often a consumer redraws a growing answer."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator


def coalesce(chunks: Iterable[str], interval_s: float,
             clock: Callable[[], float] = time.monotonic) -> Iterator[str]:
    """Join chunks so that at most one piece is yielded per `interval_s`; nothing is lost or reordered.

    The first chunk is yielded at once (time to first token matters most); the rest are held until
    the interval has passed, and whatever is held is yielded when the input ends.
    """
    pending: list[str] = []
    last = None
    for chunk in chunks:
        pending.append(chunk)
        now = clock()
        if last is None or now - last >= interval_s:
            yield "".join(pending)
            pending.clear()
            last = now
    if pending:
        yield "".join(pending)
