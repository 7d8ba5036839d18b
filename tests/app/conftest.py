"""Page fixtures: a fresh AppTest session per test, and readers of what the page shows."""

from __future__ import annotations

import time

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.support.helpers import ROOT

TIMEOUT = 60


@pytest.fixture(autouse=True)
def _fresh_engine():
    """Each page test starts with no model loaded and leaves none behind (the engine outlives Streamlit's caches)."""
    from chat_engine.engine import close_shared

    close_shared()
    yield
    close_shared()


@pytest.fixture
def db_path(monkeypatch, tmp_path):
    """Each test gets its own conversations database."""
    path = tmp_path / "conversations.db"
    monkeypatch.setenv("MOE_CHAT_DB", str(path))
    return path


def open_page(query: dict[str, str] | None = None) -> AppTest:
    """A new browser session on the page (a refresh, or another tab), optionally with URL query parameters."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    return at


@pytest.fixture
def app(monkeypatch, models_file, db_path):
    """A fresh page session with the demo model preloaded and the tiny random model registered."""
    monkeypatch.setenv("MOE_CHAT_MODELS_FILE", str(models_file))
    st.cache_resource.clear()
    at = open_page()
    assert not at.exception, at.exception
    yield at
    st.cache_resource.clear()  # the page's cached settings and store; the engine is closed by _fresh_engine


def chat_messages(at: AppTest) -> list[tuple[str, str]]:
    return [(m.name, m.markdown[0].value) for m in at.chat_message]


def status_text(at: AppTest) -> str:
    return " ".join(e.value for e in [*at.sidebar.success, *at.sidebar.info, *at.sidebar.error])


def run_until(at: AppTest, text: str, timeout: float = 30.0) -> None:
    """Rerun the page until the sidebar shows `text`: loads run in the background, as in a browser."""
    deadline = time.monotonic() + timeout
    while text not in status_text(at):
        assert time.monotonic() < deadline, f"sidebar never showed {text!r}; it shows {status_text(at)!r}"
        time.sleep(0.2)
        at.run()


