"""Guessing made slow: wrong passwords counted per key (a tab, an address, an account), and a server-wide pace."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable

log = logging.getLogger("moe_chat.guesses")


class GuessThrottle:
    """After `free` wrong passwords under one key (a tab, an address), each next try under it waits longer: base,
    2 x base, ... up to max_s. A try is made under several keys at once and waits for the slowest of them.

    Behind an SSH tunnel every user arrives from one address, which Streamlit then gives as none: only the tab is a
    key there, so a guesser slows down only their own tab and never locks the owner out. A guesser who opens a new
    tab for every guess is held by the pace instead: at most `per_second` passwords are compared each second by the
    whole server, in the order they were given, so the owner's right password is compared after those given before
    it and gets in on its first try.
    """

    def __init__(self, free: int = 3, base_s: float = 2.0, max_s: float = 300.0, per_second: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, remembered: int = 10_000) -> None:
        self.free, self.base_s, self.max_s, self.clock = free, base_s, max_s, clock
        self.per_second, self.remembered = per_second, remembered
        self._failures: OrderedDict[Hashable, tuple[int, float]] = OrderedDict()  # key -> (wrong tries, last)
        self._next_slot = 0.0  # when the next password may be compared, by anyone
        self._lock = threading.Lock()

    def _wait_locked(self, key: Hashable) -> float:
        count, last = self._failures.get(key, (0, 0.0))
        if count < self.free:
            return 0.0
        delay = min(self.max_s, self.base_s * 2 ** min(count - self.free, 30))
        return max(0.0, last + delay - self.clock())

    def pace(self, max_wait_s: float = float("inf")) -> float:
        """Take the next of the server's comparison slots: the seconds to wait before comparing (0: now). A try
        that would wait more than `max_wait_s` takes no slot (it is refused), so a flood of refused tries does not
        push everyone's turn further out once it stops."""
        with self._lock:
            now = self.clock()
            slot = max(now, self._next_slot)
            if slot - now <= max_wait_s:
                self._next_slot = slot + 1.0 / self.per_second
            return slot - now

    def begin(self, keys: Iterable[Hashable]) -> float:
        """Claim a try under `keys`: 0 when it may compare a password now (the window is taken, so tries at once
        under one key get one between them), else the seconds to wait."""
        keys = list(keys)
        with self._lock:
            wait = max((self._wait_locked(k) for k in keys), default=0.0)
            if wait == 0:
                for key in keys:
                    if key in self._failures:
                        self._failures[key] = (self._failures[key][0], self.clock())
            return wait

    def failed(self, keys: Iterable[Hashable], what: str = "page password") -> int:
        """Count a wrong try under `keys`; returns the most wrong tries in a row of any of them."""
        keys = list(keys)
        with self._lock:
            now = self.clock()
            worst = 0
            for key in keys:
                count = self._failures.pop(key, (0, 0.0))[0] + 1
                self._failures[key] = (count, now)  # the most recent last: the oldest are forgotten first
                worst = max(worst, count)
            while len(self._failures) > self.remembered:
                self._failures.popitem(last=False)
        log.warning("wrong %s (%s): %d in a row", what,
                    ", ".join(f"{kind} {value}" for kind, value in keys), worst)
        return worst

    @property
    def counted(self) -> int:
        """How many keys have wrong tries counted against them."""
        with self._lock:
            return len(self._failures)

    def succeeded(self, keys: Iterable[Hashable]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
