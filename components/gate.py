"""An optional password in front of the whole page (the port forward may be reachable by anyone with the link)."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Hashable

import streamlit as st

from common import sessions
from components import state

log = logging.getLogger(__name__)


class GuessThrottle:
    """After `free` wrong passwords from one address, each next try waits longer: base, 2 x base, ... up to max_s."""

    def __init__(self, free: int = 3, base_s: float = 2.0, max_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.base_s, self.max_s, self.clock = free, base_s, max_s, clock
        self._failures: dict[Hashable, tuple[int, float]] = {}  # address -> (wrong tries, when the last was)
        self._lock = threading.Lock()

    def _wait_locked(self, address: Hashable) -> float:
        count, last = self._failures.get(address, (0, 0.0))
        if count < self.free:
            return 0.0
        delay = min(self.max_s, self.base_s * 2 ** min(count - self.free, 30))
        return max(0.0, last + delay - self.clock())

    def wait_s(self, address: Hashable) -> float:
        """Seconds before `address` may try again (0: now)."""
        with self._lock:
            return self._wait_locked(address)

    def begin(self, address: Hashable) -> float:
        """Claim a try for `address`: 0 when it may compare a password now (the window is taken, so sessions
        trying at once from one address get one try between them), else the seconds to wait."""
        with self._lock:
            wait = self._wait_locked(address)
            if wait == 0 and address in self._failures:
                count, _ = self._failures[address]
                self._failures[address] = (count, self.clock())
            return wait

    def failed(self, address: Hashable) -> int:
        with self._lock:
            count = self._failures.get(address, (0, 0.0))[0] + 1
            self._failures[address] = (count, self.clock())
        log.warning("wrong page password from %s (%d in a row)", address or "an unknown address", count)
        return count

    def succeeded(self, address: Hashable) -> None:
        with self._lock:
            self._failures.pop(address, None)


def client_address() -> str | None:
    """The browser's address as the server sees it (None where there is none, e.g. in tests)."""
    address = st.context.ip_address
    return address if isinstance(address, str) else None


THROTTLE = GuessThrottle()  # one for the server process: every session and tab of an address shares it


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
        address = client_address()
        wait = THROTTLE.begin(address)
        if wait > 0:  # not even compared: guessing gets slower with every wrong try
            st.error(f"Too many wrong passwords from your address: try again in {wait:.0f} s.", icon=":material/lock:")
            return False
        if hmac.compare_digest(given.encode(), expected.encode()):
            THROTTLE.succeeded(address)
            st.session_state[state.GATE_OK] = True
            st.rerun()
        THROTTLE.failed(address)
        st.error("Wrong password.", icon=":material/lock:")
    return False
