"""Before a request joins the model's line it is read, checked and its tokens counted: work that one client could
otherwise multiply. Each client may have only as many requests in that phase as it may hold places in line, and
only `at_once` requests of all clients do that work at the same time."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

from common.errors import LineFullError


class Admission:
    def __init__(self, at_once: int = 2) -> None:
        self.at_once = at_once
        self._working: asyncio.Semaphore | None = None  # made in the server's event loop, on first use
        self._entered: Counter[Hashable] = Counter()

    @asynccontextmanager
    async def enter(self, client: Hashable, per_client: int) -> AsyncIterator[None]:
        """Hold one of `client`'s places while its request is read and checked (LineFullError when it has none)."""
        if per_client and self._entered[client] >= per_client:
            raise LineFullError(f"You already have {self._entered[client]} requests being read and checked, the most "
                                "one client may have: wait for them to be answered.")
        self._entered[client] += 1
        try:
            yield
        finally:
            self._entered[client] -= 1
            if not self._entered[client]:
                del self._entered[client]

    @asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        """One of the `at_once` places for the CPU work of checking and counting (reading a body needs none)."""
        if self._working is None:
            self._working = asyncio.Semaphore(self.at_once)
        async with self._working:
            yield
