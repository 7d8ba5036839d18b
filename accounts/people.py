"""Who is using the app, where that comes from, and what their role lets them do."""

from __future__ import annotations

from dataclasses import dataclass

from accounts.records import ADMIN_ACTIONS
from common.errors import NotAllowedError

# Where identity comes from, chosen once at the server's start from what is configured, first match wins.
PROXY = "proxy"  # a trusted reverse proxy names the person in a header, with a shared secret beside it
OIDC = "oidc"  # Streamlit's st.login, when secrets.toml has an [auth] section
ACCOUNTS = "accounts"  # built-in accounts with passwords, when any exist
NONE = "none"  # no sign-in: one local user who may do everything (and the optional shared password)


def choose_mode(proxy_configured: bool, oidc_configured: bool, has_accounts: bool) -> str:
    """The identity source in the order the app prefers them."""
    if proxy_configured:
        return PROXY
    if oidc_configured:
        return OIDC
    if has_accounts:
        return ACCOUNTS
    return NONE


@dataclass(frozen=True)
class Person:
    """The signed-in person (name None: the one local user of a server without accounts) and their role."""

    name: str | None
    role: str

    @property
    def owner(self) -> str | None:
        """Whose conversations this person sees."""
        return self.name

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may(self, action: str) -> bool:
        return self.is_admin or action not in ADMIN_ACTIONS

    def require(self, action: str) -> None:
        """Raise NotAllowedError unless this person may do `action`."""
        if not self.may(action):
            raise NotAllowedError(f"Only an admin may {ADMIN_ACTIONS[action]}: ask one (signed in as {self.name}, a "
                                  f"{self.role}).")

    def line_client(self, fallback: str) -> str:
        """Who this person's answers wait in line as: their account, else `fallback` (an address or a tab)."""
        return f"user {self.name}" if self.name else fallback


LOCAL = Person(None, "admin")  # the one user of a server without accounts may do everything, as before accounts
