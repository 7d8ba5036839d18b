"""The page's one stream throttle: how often a growing answer is redrawn (each redraw re-sends the whole text)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator


def coalesce(chunks: Iterable[str], interval_s: float,
             clock: Callable[[], float] = time.monotonic) -> Iterator[str]:
    """Join chunks so that at most one piece is yielded per `interval_s`; nothing is lost or reordered.

    The first chunk is yielded at once (time to first token matters most); the rest are held until
    the interval has passed, and whatever is held is yielded when the input ends, or before its error is raised.
    """
    pending: list[str] = []
    last = None
    try:
        for chunk in chunks:
            pending.append(chunk)
            now = clock()
            if last is None or now - last >= interval_s:
                yield "".join(pending)
                pending.clear()
                last = now
    except Exception:
        if pending:  # text written before a failure is part of the answer that is kept
            yield "".join(pending)
        raise
    if pending:
        yield "".join(pending)
