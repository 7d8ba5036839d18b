"""An optional password in front of the whole page (the port forward may be reachable by anyone with the link)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

import streamlit as st

from common import sessions
from common.guesses import GuessThrottle
from components import state

__all__ = ["GuessThrottle", "render", "line_client", "throttle_keys"]


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


def remember_in_browser(ticket: str, path: str) -> None:
    """Have this tab trade `ticket` at `path` for the cookie that lets a refresh skip the password."""
    st.html(f"<script>fetch({path!r}, {{method: 'POST', body: {ticket!r}, credentials: 'same-origin'}})</script>",
            unsafe_allow_javascript=True)


def render(expected: str | None, session_id: str, remembered: bool = False,
           remember: Callable[[], None] | None = None) -> bool:
    """True when the page may be drawn; otherwise draws only the password form. A session that passes may upload.
    `remembered`: this browser was given the password before (its cookie says so); `remember` makes it so."""
    if not expected or st.session_state.get(state.GATE_OK) or remembered:
        st.session_state[state.GATE_OK] = True
        sessions.allow(session_id)
        if remember is not None and st.session_state.pop(state.REMEMBER_PASS, False):
            remember()
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
        turn = THROTTLE.pace(MAX_PACE_WAIT_S)
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
            st.session_state[state.REMEMBER_PASS] = True
            st.rerun()
        THROTTLE.failed(keys)
        st.error("Wrong password.", icon=":material/lock:")
    return False
