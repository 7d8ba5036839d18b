"""An optional password in front of the whole page (the port forward may be reachable by anyone with the link)."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable

import streamlit as st

from common import sessions
from components import state

log = logging.getLogger(__name__)


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

    def pace(self) -> float:
        """Take the next of the server's comparison slots: the seconds to wait before comparing (0: now)."""
        with self._lock:
            now = self.clock()
            slot = max(now, self._next_slot)
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

    def failed(self, keys: Iterable[Hashable]) -> int:
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
        log.warning("wrong page password (%s): %d in a row",
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


def client_address() -> str | None:
    """The browser's address as the server sees it (None where there is none: a tunnel, tests)."""
    address = st.context.ip_address
    return address if isinstance(address, str) else None


def line_client(session_id: str) -> str:
    """Who a page answer waits in line as: its address, or its tab where there is no address (a tunnel, where every
    user would otherwise be one client and share one client's places)."""
    return client_address() or f"tab {session_id}"


def throttle_keys(session_id: str, address: str | None) -> list[tuple[str, str]]:
    """What a password try is counted under: its tab, and its address when there is one."""
    return [("tab", session_id)] + ([("address", address)] if address else [])


MAX_PACE_WAIT_S = 120.0  # a try that would wait longer for its turn is refused instead
THROTTLE = GuessThrottle()  # one for the server process: every session and tab shares it


def render(expected: str | None, session_id: str) -> bool:
    """True when the page may be drawn; otherwise draws only the password form. A session that passes may upload."""
    if not expected or st.session_state.get(state.GATE_OK):
        sessions.allow(session_id)
        return True
    st.title("MoE Chat")
    with st.form("password_form"):
        given = st.text_input("Password", type="password", key="password_input")
        submitted = st.form_submit_button("Enter")
    if submitted:
        keys = throttle_keys(session_id, client_address())
        wait = THROTTLE.begin(keys)
        if wait > 0:  # not even compared: guessing gets slower with every wrong try
            st.error(f"Too many wrong passwords: try again in {wait:.0f} s.", icon=":material/lock:")
            return False
        turn = THROTTLE.pace()
        if turn > MAX_PACE_WAIT_S:
            st.error(f"Many passwords are being tried on this server right now: try again in {turn:.0f} s.",
                     icon=":material/lock:")
            return False
        if turn > 0:
            with st.spinner(f"Checking (other passwords are being checked first: {turn:.0f} s)…"):
                time.sleep(turn)
        if hmac.compare_digest(given.encode(), expected.encode()):
            THROTTLE.succeeded(keys)
            st.session_state[state.GATE_OK] = True
            st.rerun()
        THROTTLE.failed(keys)
        st.error("Wrong password.", icon=":material/lock:")
    return False
