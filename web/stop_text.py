"""Stop strings, as OpenAI and vLLM apply them: the answer ends where one first appears, and it is not included.

Text arrives in pieces, and a stop string may straddle two of them, so the last few characters that could begin one
are held back until the next piece shows whether they do.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopText:
    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> tuple[str, bool]:
        """(text that can be sent now, whether a stop string was reached)."""
        if self.stopped:
            return "", True
        buffer = self.pending + text
        hits = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped, self.pending = True, ""
            return buffer[: min(hits)], True
        keep = len(buffer) - self.hold if self.hold else len(buffer)
        keep = max(keep, 0)
        self.pending = buffer[keep:]
        return buffer[:keep], False

    def flush(self) -> str:
        """What was held back, once the answer has ended without reaching a stop string."""
        tail, self.pending = ("" if self.stopped else self.pending), ""
        return tail
