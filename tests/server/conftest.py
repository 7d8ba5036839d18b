"""A real server driven through the page's own websocket protocol (bench/streamlit_ws.py), as strangers would."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

from tests.support.helpers import ROOT, write_models_toml
from tests.support.server import running_server

sys.path.insert(0, str(ROOT / "bench"))  # the protocol client lives beside the load test that uses it

RANDOM_MODEL = "ws-random-moe"


@pytest.fixture(scope="module")
def random_server(tmp_path_factory, random_model_dir: Path):
    """A server whose default model is the tiny random one (it never stops early) with long answers."""
    home = tmp_path_factory.mktemp("ws-server")
    models = write_models_toml(home / "models.toml", RANDOM_MODEL, "WS random MoE", random_model_dir)
    models.write_text(models.read_text() + "preload = true\n")
    env = {"MOE_CHAT_MODELS_FILE": str(models), "MOE_CHAT_DEFAULT_MODEL": RANDOM_MODEL,
           "MOE_CHAT_MAX_NEW_TOKENS": "600", "MOE_CHAT_DB": str(home / "conversations.db"), "MOE_CHAT_DEVICE": "cpu"}
    with running_server(home / "server.log", env) as url:
        yield url


def run(coroutine, timeout_s: float = 180.0):
    """Run one scenario to its end, bounded in time, on a thread of its own (Playwright's sync API may already
    hold an event loop in this one, when the browser tier ran first)."""
    outcome: dict = {}

    def scenario() -> None:
        try:
            outcome["value"] = asyncio.run(asyncio.wait_for(coroutine, timeout_s))
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    worker = threading.Thread(target=scenario, name="ws-scenario")
    worker.start()
    worker.join(timeout_s + 30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
