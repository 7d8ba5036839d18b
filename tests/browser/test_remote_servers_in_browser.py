"""End to end, once per real server: `streamlit run app.py` in Chromium connects to the server and the demo's known
answer streams in."""

from __future__ import annotations

import re

import pytest

from tests.browser.test_chat_in_browser import WATCH_ANSWER, answer_text, ask, switch_model
from tests.support.helpers import KNOWN_ANSWERS
from tests.support.model_servers import VLLM_KEY, VllmServer
from tests.support.server import running_server

pytestmark = [pytest.mark.browser, pytest.mark.remote, pytest.mark.slow]


@pytest.mark.parametrize("server_fixture", ["tserve", "vllm"])
def test_the_known_answer_streams_in_from_the_server(request, tmp_path, page, server_fixture):
    server = request.getfixturevalue(server_fixture)
    key = {"api_key_env": "TEST_VLLM_KEY"} if isinstance(server, VllmServer) else {}
    models = tmp_path / "models.toml"
    models.write_text(server.row("remote", **key))
    env = {"MOE_CHAT_MODELS_FILE": str(models), "MOE_CHAT_DB": str(tmp_path / "db.sqlite"),
           "TEST_VLLM_KEY": VLLM_KEY}
    with running_server(tmp_path / "streamlit.log", env) as url:
        page.goto(url)
        page.get_by_text(re.compile(r"\bready\b")).first.wait_for(timeout=60_000)
        switch_model(page, f"{server.name} remote", button="Connect", done="connected")
        page.evaluate(WATCH_ANSWER)
        ask(page, "Who are you?")
        answer = KNOWN_ANSWERS["Who are you?"]
        answer_text(page, answer).wait_for(timeout=30_000)
        seen = page.evaluate("window.__seen")
        assert seen and seen[-1] == answer, seen
