"""An optional password in front of the whole page (the port forward may be reachable by anyone with the link)."""

from __future__ import annotations

import hmac

import streamlit as st

from components import state


def secrets_password() -> str | None:
    """`password` from .streamlit/secrets.toml, if that file exists and sets it."""
    try:
        value = st.secrets.get("password")
    except Exception:  # no secrets file at all: Streamlit raises rather than returning nothing
        return None
    return str(value) if value else None


def render(expected: str | None) -> bool:
    """True when the page may be drawn; otherwise draws only the password form."""
    if not expected or st.session_state.get(state.GATE_OK):
        return True
    st.title("MoE Chat")
    with st.form("password_form"):
        given = st.text_input("Password", type="password", key="password_input")
        submitted = st.form_submit_button("Enter")
    if submitted:
        if hmac.compare_digest(given.encode(), expected.encode()):
            st.session_state[state.GATE_OK] = True
            st.rerun()
        st.error("Wrong password.", icon=":material/lock:")
    return False
