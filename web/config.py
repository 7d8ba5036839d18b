"""The app's settings, resolved in one place: `MOE_CHAT_*` variables, then `.streamlit/secrets.toml` for the two
secrets (password, api_key) the environment leaves unset. The server resolves them once at start and the page and
the API both use that one value, so the shared engine sees the same settings from either."""

from __future__ import annotations

import threading
from dataclasses import replace

from common.settings import Settings

SECRET_FIELDS = ("password", "api_key", "proxy_secret")
_lock = threading.Lock()
_resolved: Settings | None = None


def read_secrets() -> dict[str, str]:
    """The secrets the app takes from Streamlit's secrets.toml (empty where there is no such file)."""
    try:
        import streamlit as st

        return {name: str(st.secrets[name]) for name in SECRET_FIELDS if st.secrets.get(name)}
    except Exception:  # no secrets file at all: Streamlit raises rather than returning nothing
        return {}


def resolve_settings() -> Settings:
    """Read the environment and the secrets now."""
    settings = Settings.from_env()
    secrets = read_secrets()
    return replace(settings, **{name: getattr(settings, name) or secrets.get(name) for name in SECRET_FIELDS})


def app_settings() -> Settings:
    """The process's settings: resolved on first use (the server's start), the same value afterwards."""
    global _resolved
    with _lock:
        if _resolved is None:
            _resolved = resolve_settings()
        return _resolved


def reset() -> None:
    """Forget the resolved settings (and the identity source chosen from them), so the next use reads them again
    (tests that change the environment)."""
    global _resolved
    with _lock:
        _resolved = None
    from web import identity  # chosen from these settings; imports this module

    identity.reset()
