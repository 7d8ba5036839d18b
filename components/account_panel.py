"""Who is signed in, and the way to sign in or out: a link to the sign-in form, or Streamlit's st.login."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from accounts.people import ACCOUNTS, OIDC, PROXY, Person

SIGN_IN_LINK = "signin"  # the app's own sign-in form, beside the page


def go_to_sign_in() -> None:
    """Send this tab to the sign-in form (a link button would open a new tab), with a link if scripts are off."""
    st.html(f"<script>window.location.replace({SIGN_IN_LINK!r})</script>", unsafe_allow_javascript=True)
    st.markdown(f"[Sign in]({SIGN_IN_LINK})")


def render_signed_out(mode: str, login: Callable[[], None]) -> None:
    """The page of someone not (or no longer) signed in: nothing else of the app is drawn."""
    st.title("MoE Chat")
    if mode == ACCOUNTS:
        st.info("You are signed out (or your sign-in ended): sign in to go on.", icon=":material/lock:")
        go_to_sign_in()
    elif mode == OIDC:
        st.info("Sign in to use MoE Chat.", icon=":material/lock:")
        if st.button("Sign in", key="oidc_sign_in", type="primary"):
            login()
    elif mode == PROXY:
        st.error("The proxy in front of this app did not say who you are: open the app through it.",
                 icon=":material/lock:")


def render_signed_in(person: Person, mode: str, sign_out: Callable[[], object]) -> None:
    """The sidebar's line naming the person, with Sign out where the app (not a proxy) signed them in: it ends the
    sign-in on the server, so the cookie left in the browser opens nothing."""
    if person.name is None:
        return
    st.caption(f"Signed in as **{person.name}** ({person.role})")
    if mode == ACCOUNTS and st.button("Sign out", key="sign_out", icon=":material/logout:"):
        sign_out()
        go_to_sign_in()
        st.stop()
    elif mode == OIDC and st.button("Sign out", key="oidc_sign_out", icon=":material/logout:"):
        st.logout()
