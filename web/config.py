"""The app's settings, resolved in one place: `MOE_CHAT_*` variables, then `.streamlit/secrets.toml` for the two
secrets (password, api_key) the environment leaves unset. The server resolves them once at start and the page and
the API both use that one value, so the shared engine sees the same settings from either."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Generic, TypeVar

from common.settings import Settings

SECRET_FIELDS = ("password", "api_key", "proxy_secret")
T = TypeVar("T")


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


class OncePerProcess(Generic[T]):
    """A value of the server process made on first use (the server's start) and the same afterwards, until
    `reset()` (tests that change the environment); `forget` releases what a reset value held."""

    def __init__(self, make: Callable[[], T], forget: Callable[[T], None] | None = None) -> None:
        self._make, self._forget = make, forget
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value

    def reset(self) -> None:
        with self._lock:
            if self._value is not None and self._forget is not None:
                self._forget(self._value)
            self._value = None


_SETTINGS = OncePerProcess(resolve_settings)


def app_settings() -> Settings:
    """The process's settings: resolved on first use (the server's start), the same value afterwards."""
    return _SETTINGS.get()


def reset() -> None:
    """Forget the resolved settings (and the identity source chosen from them), so the next use reads them again
    (tests that change the environment)."""
    _SETTINGS.reset()
    from web import identity  # chosen from these settings; imports this module

    identity.reset()
