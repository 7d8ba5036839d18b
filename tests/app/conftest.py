"""Page fixtures: a fresh AppTest session per test, and readers of what the page shows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.support.helpers import ROOT
from web import config

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
def page_for(monkeypatch, db_path):
    """The one page factory: `page_for(models_file, MOE_CHAT_X="...")` opens a fresh page session on that registry
    with those settings (Streamlit's caches cleared, so the page reads them), after a clean start without error."""

    def make(models: Path, query: dict[str, str] | None = None, **env: str) -> AppTest:
        monkeypatch.setenv("MOE_CHAT_MODELS_FILE", str(models))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        config.reset()  # the settings are read again, as a restarted server would
        st.cache_resource.clear()
        at = open_page(query)
        assert not at.exception, at.exception
        return at

    yield make
    st.cache_resource.clear()  # the page's cached settings and store; the engine is closed by _fresh_engine


@pytest.fixture
def app(page_for, models_file):
    """A fresh page session with the demo model preloaded and the tiny random model registered."""
    return page_for(models_file)


@pytest.fixture
def fake_page(page_for, tmp_path):
    """A factory of pages whose default model is the fake one, with a fresh script (`fake_page(MOE_CHAT_X=...)`)."""
    from tests.support import fake_backend

    models = fake_backend.install(tmp_path)
    fake_backend.SCRIPT.__dict__.update(fake_backend.FakeScript().__dict__)
    yield lambda **env: page_for(models, MOE_CHAT_DEFAULT_MODEL="fake", **env)
    if fake_backend.SCRIPT.gate is not None:
        fake_backend.SCRIPT.gate.set()


def stop_midway(at: AppTest, seconds: float) -> None:
    """Run the page and cut the run off after `seconds`, mid-answer, as the Stop button does (the run must still be
    going then: a run that ends by itself, or fails otherwise, fails the test)."""
    with pytest.raises(RuntimeError, match="timed out"):
        at.run(timeout=seconds)


def chat_messages(at: AppTest) -> list[tuple[str, str]]:
    return [(m.name, m.markdown[0].value) for m in at.chat_message]


def action(at: AppTest, name: str, which: int = -1):
    """A message's button (`regenerate`, `edit`, `prev`, `next`): on the last message that has it, or the
    `which`-th of them. The page keys them by message id."""
    found = [b for b in at.button if b.key and b.key.startswith(f"{name}_") and b.key[len(name) + 1:].isdigit()]
    assert found, f"no {name} button; buttons: {[b.key for b in at.button]}"
    return found[which]


def status_text(at: AppTest) -> str:
    return " ".join(e.value for e in [*at.sidebar.success, *at.sidebar.info, *at.sidebar.error])


def run_until(at: AppTest, text: str, timeout: float = 30.0) -> None:
    """Rerun the page until the sidebar shows `text`: loads run in the background, as in a browser."""
    deadline = time.monotonic() + timeout
    while text not in status_text(at):
        assert time.monotonic() < deadline, f"sidebar never showed {text!r}; it shows {status_text(at)!r}"
        time.sleep(0.2)
        at.run()


