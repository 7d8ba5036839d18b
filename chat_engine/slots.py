"""The line in front of the shared model: at most N generations at once, served fairly between clients.

Requests are grouped by client (the browser's address, or any key): the next free slot goes to the waiting client
served least recently, and within one client to its oldest request. So one client's flood of requests waits behind
its own requests, not in front of everyone else's; a client may hold at most `per_client` places in line.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Hashable

from common.errors import LineFullError


class SlotQueue:
    """Generations wait here until one of `slots` places is free; see the module docstring for the order."""

    def __init__(self, slots: int, per_client: int = 0) -> None:
        if slots < 1:
            raise ValueError("at least one generation slot is needed")
        self.slots = slots
        self.per_client = per_client  # 0: no cap
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: list[tuple[object, Hashable]] = []  # (ticket, client) in arrival order
        self._served: dict[Hashable, int] = {}  # client -> when it was last given a slot
        self._clock = itertools.count()

    def enter(self, ticket: object, client: Hashable = None) -> None:
        """Join the line now, before a worker waits in it (`acquire`); LineFullError when `client` has its share."""
        with self._cond:
            waiting = sum(1 for _, c in self._waiting if c == client)
            if self.per_client and waiting >= self.per_client:
                raise LineFullError(f"You already have {waiting} requests waiting for the model, the most one "
                                    "address may have: wait for them to be answered, or stop one.")
            self._waiting.append((ticket, client))
            self._cond.notify_all()

    def _order(self) -> list[object]:
        """The waiting tickets in the order they would be served if nothing else arrived (round robin)."""
        by_client: dict[Hashable, list[object]] = {}
        for ticket, client in self._waiting:
            by_client.setdefault(client, []).append(ticket)
        clients = sorted(by_client, key=lambda c: self._served.get(c, -1))  # least recently served first
        order = []
        for rank in range(max((len(t) for t in by_client.values()), default=0)):
            order += [by_client[c][rank] for c in clients if rank < len(by_client[c])]
        return order

    def acquire(self, ticket: object, stop: threading.Event, client: Hashable = None) -> bool:
        """Block until `ticket` may run (True) or `stop` is set while it waits (False); joins the line first unless
        `enter` did."""
        with self._cond:
            if not any(t is ticket for t, _ in self._waiting):
                self._waiting.append((ticket, client))
            try:
                while not (self._running < self.slots and self._order()[0] is ticket):
                    if stop.is_set():
                        return False
                    self._cond.wait(timeout=0.05)  # stop is an Event, not a notify: look at it regularly
                self._running += 1
                self._served[client] = next(self._clock)
                return True
            finally:
                self._waiting = [(t, c) for t, c in self._waiting if t is not ticket]
                self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def position(self, ticket: object) -> int:
        """How many requests are ahead of `ticket` and it (1: next), or 0 when it is not waiting."""
        with self._cond:
            order = self._order()
            return order.index(ticket) + 1 if ticket in order else 0

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)
