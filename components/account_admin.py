"""The admin's view of the accounts: who exists, disable or re-enable one, make one an admin or a user."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st


@dataclass(frozen=True)
class AccountActions:
    """What the panel may do; each action checks the admin role where it runs (app.py)."""

    list_accounts: Callable[[], list[Any]]
    set_disabled: Callable[[str, bool], None]
    set_role: Callable[[str, str], None]


def render(me: str, actions: AccountActions) -> None:
    """Every account with its role and state; an admin cannot disable or demote their own account here."""
    with st.expander("Accounts"):
        for account in actions.list_accounts():
            state = "disabled" if account.disabled else "active"
            st.caption(f"**{account.name}** · {account.role} · {state}")
            if account.name == me:
                continue
            left, right = st.columns(2)
            if left.button("Enable" if account.disabled else "Disable", key=f"account_disable_{account.name}"):
                actions.set_disabled(account.name, not account.disabled)
                st.rerun()
            other = "user" if account.role == "admin" else "admin"
            if right.button(f"Make {other}", key=f"account_role_{account.name}"):
                actions.set_role(account.name, other)
                st.rerun()
        st.caption("Add accounts and reset passwords with `python -m accounts` on the server (docs/accounts.md).")
