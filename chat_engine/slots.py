"""A first-come, first-served queue in front of the shared model: at most N generations run at once."""

from __future__ import annotations

import threading


class SlotQueue:
    """Generations wait here in arrival order until one of `slots` places is free."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("at least one generation slot is needed")
        self.slots = slots
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: list[object] = []

    def acquire(self, ticket: object, stop: threading.Event) -> bool:
        """Block until `ticket` may run (True) or `stop` is set while it waits (False)."""
        with self._cond:
            self._waiting.append(ticket)
            try:
                while not (self._waiting[0] is ticket and self._running < self.slots):
                    if stop.is_set():
                        return False
                    self._cond.wait(timeout=0.05)  # stop is an Event, not a notify: look at it regularly
                self._running += 1
                return True
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def position(self, ticket: object) -> int:
        """How many requests are ahead of `ticket` and it (1: next), or 0 when it is not waiting."""
        with self._cond:
            return self._waiting.index(ticket) + 1 if ticket in self._waiting else 0

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)
