"""Who a request or a page belongs to: the identity source chosen at the server's start, and the person a session
cookie, a trusted proxy's header, Streamlit's OIDC user or an API key names."""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from accounts.passwords import dummy_hash
from accounts.people import ACCOUNTS, LOCAL, NONE, OIDC, PROXY, Person, choose_mode
from accounts.records import Account
from accounts.store import AccountStore
from common.errors import MoEChatError
from common.guesses import GuessThrottle
from web.config import OncePerProcess, app_settings

log = logging.getLogger("moe_chat.identity")
SESSION_COOKIE = "moe_chat_session"
PROXY_SECRET_HEADER = "x-moe-chat-proxy-secret"
SIGN_IN_THROTTLE = GuessThrottle()  # per account from one address, per address, and the server-wide pace
ACCOUNT_MAX_WAIT_S = 30.0
ACCOUNT_THROTTLE = GuessThrottle(max_s=ACCOUNT_MAX_WAIT_S)  # per account from anywhere: slows, never locks out


def _person(account: Account | None) -> Person | None:
    """The person an account is, if it may sign in now (a disabled account is nobody)."""
    return Person(account.name, account.role) if account is not None and not account.disabled else None


@dataclass(frozen=True)
class Identity:
    """The server's identity source and what it needs; `accounts` is None only in the no-accounts mode."""

    mode: str
    accounts: AccountStore | None
    proxy_header: str = ""  # lower case, as ASGI gives header names
    proxy_secret: str | None = None
    sign_in_s: float = 14 * 86400.0

    @property
    def signs_in(self) -> bool:
        """Whether people have names here (anything but the one local user)."""
        return self.mode != NONE

    def from_cookie(self, cookies: Mapping[str, str]) -> Person | None:
        """The person a session cookie signs in (accounts mode)."""
        if self.accounts is None:
            return None
        return _person(self.accounts.signed_in(cookies.get(SESSION_COOKIE)))

    def from_proxy(self, headers: Mapping[str, str]) -> Person | None:
        """The person the proxy named (proxy mode; a header without the secret was already taken off)."""
        return self._named(headers.get(self.proxy_header, "").strip(), "the proxy")

    def from_oidc(self, email: str | None, verified: object = None) -> Person | None:
        """The person Streamlit's identity provider signed in (OIDC mode), known by their e-mail address, unless the
        provider says it has not verified that address (anyone could then claim an admin's)."""
        return None if verified is False else self._named(email or "", "the identity provider")

    def _named(self, name: str, by: str) -> Person | None:
        """The person `by` named: their account, made (as a user) the first time the name is seen."""
        if self.accounts is None or not name:
            return None
        try:  # one read per request; a write only the first time a name is seen
            return _person(self.accounts.get(name) or self.accounts.ensure(name))
        except MoEChatError as exc:
            log.warning("%s named someone who cannot have an account: %s", by, exc)
            return None

    def from_key(self, key: str, shared_key: str | None) -> Person | None:
        """The person an API key belongs to: an account's key, or MOE_CHAT_API_KEY (the server's admin key)."""
        key = key.strip()
        if shared_key and hmac.compare_digest(key.encode(), shared_key.strip().encode()):
            return LOCAL if self.mode == NONE else Person("api", "admin")
        if self.accounts is None:
            return None
        return _person(self.accounts.key_owner(key))

    def proxy_headers_believed(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """`headers` without the secret, and without the person's header unless the secret came with it."""
        if self.mode != PROXY:
            return headers
        secret_name, user_name = PROXY_SECRET_HEADER.encode(), self.proxy_header.encode()
        given = next((v for k, v in headers if k.lower() == secret_name), None)
        believed = given is not None and hmac.compare_digest(given, (self.proxy_secret or "").encode())
        kept = [(k, v) for k, v in headers if k.lower() != secret_name and (believed or k.lower() != user_name)]
        if not believed and len(kept) != len(headers):
            log.warning("ignored a %s header that came without the proxy's secret", self.proxy_header)
        return kept


def oidc_configured() -> bool:
    """Whether Streamlit's secrets.toml has an [auth] section (then st.login signs people in)."""
    try:
        import streamlit as st

        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def resolve_identity() -> Identity:
    settings = app_settings()
    path = settings.accounts_file()
    proxy, oidc = settings.proxy_configured(), oidc_configured()
    # Only open (and so create) the accounts file where it is needed: a server without accounts writes nothing.
    store = AccountStore(path) if proxy or oidc or path.exists() else None
    mode = choose_mode(proxy, oidc, store is not None and store.has_built_in())
    if mode == NONE and store is not None:
        store.close()
        store = None
    if mode == ACCOUNTS:  # the first wrong name would otherwise take twice as long as a wrong password
        threading.Thread(target=dummy_hash, name="moe-chat-dummy-hash", daemon=True).start()
    log.info("identity: %s", {PROXY: f"the proxy's {settings.proxy_user_header} header", OIDC: "st.login (OIDC)",
                              ACCOUNTS: f"built-in accounts in {path}", NONE: "none (one local user)"}[mode])
    return Identity(mode, store, settings.proxy_user_header.strip().lower(), settings.proxy_secret,
                    settings.sign_in_days * 86400.0)


def _close(chosen: Identity) -> None:
    if chosen.accounts is not None:
        chosen.accounts.close()


_IDENTITY = OncePerProcess(resolve_identity, forget=_close)


def identity() -> Identity:
    """The server's identity source: chosen on first use (the server's start), the same afterwards."""
    return _IDENTITY.get()


def reset() -> None:
    """Choose again on next use (tests that change the settings)."""
    _IDENTITY.reset()
