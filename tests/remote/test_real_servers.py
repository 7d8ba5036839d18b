"""The page driving real model servers on loopback: `transformers serve` and vLLM's CPU build, both serving the demo.

Through the page (AppTest): the known answer streams in; Stop ends the request on the server (vLLM's /metrics
shows it); a wrong key is a clear error; a server killed mid-answer leaves the partial answer and says what
happened, and the page answers again once the server is back.
"""

from __future__ import annotations

import threading
import time

import pytest
import streamlit as st

from tests.app.conftest import chat_messages, open_page, run_until, status_text
from tests.support.helpers import KNOWN_ANSWERS
from tests.support.model_servers import VLLM_KEY, VllmServer

pytestmark = [pytest.mark.slow, pytest.mark.remote]
LONG = {"ignore_eos": True, "max_new_tokens": 2000}  # a long answer, so that there is time to stop or kill it


@pytest.fixture(params=["tserve", "vllm"])
def server(request):
    server = request.getfixturevalue(request.param)  # each server starts only for its own tests
    if server.proc.poll() is not None:  # a test killed it and failed before starting it again
        server.start()
    return server


@pytest.fixture
def page(monkeypatch, tmp_path, db_path, server):
    models = tmp_path / "models.toml"
    key = {"api_key_env": "TEST_VLLM_KEY"} if isinstance(server, VllmServer) else {}
    models.write_text(server.row("remote", **key) + server.row("long", generation=LONG, **key)
                      + server.row("wrong-key", api_key_env="TEST_WRONG_KEY"))
    monkeypatch.setenv("MOE_CHAT_MODELS_FILE", str(models))
    monkeypatch.setenv("TEST_VLLM_KEY", VLLM_KEY)
    monkeypatch.setenv("TEST_WRONG_KEY", "not-the-key")
    monkeypatch.setenv("MOE_CHAT_STALL_TIMEOUT_S", "30")
    st.cache_resource.clear()
    at = open_page()
    assert not at.exception, at.exception
    yield at
    st.cache_resource.clear()


def connect(at, server, model_id: str) -> None:
    at.sidebar.selectbox(key="model_choice").set_value(model_id).run()
    at.sidebar.button(key="load_model").click().run()
    run_until(at, f"{server.name} {model_id}** connected", timeout=60)  # this row, not the one connected before


def kill_when_streaming(server, seen: list[int]) -> None:
    """Kill the server once the page's answer has begun to arrive; `seen` gets the tokens it had then."""
    from chat_engine import engine as engines

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shared = engines._shared  # the page's engine, read afresh (never created or replaced from here)
        streamed = max((reply.new_tokens for reply in list(shared._replies)), default=0) if shared else 0
        if streamed > 10:
            seen.append(streamed)
            break
        time.sleep(0.005)
    server.kill()


def last_answer(at) -> dict:
    return at.session_state["messages"][-1]


def test_the_known_answer_streams_in_through_the_page(page, server):
    connect(page, server, "remote")
    page.chat_input[0].set_value("Who are you?").run()
    assert chat_messages(page) == [("user", "Who are you?"), ("assistant", KNOWN_ANSWERS["Who are you?"])]
    stats = last_answer(page)["stats"]
    assert stats.finish_reason == "eos" and stats.tokens == 24 and stats.ttft_s is not None


def test_stop_ends_the_request_on_the_server(page, server):
    connect(page, server, "long")
    try:
        page.chat_input[0].set_value("Tell me a story.").run(timeout=2.0)  # the run is stopped, as Stop does
    except RuntimeError:
        pass
    deadline = time.monotonic() + 10
    while page.session_state["messages"][-1]["role"] != "assistant":
        assert time.monotonic() < deadline, "the stopped answer was not kept"
        time.sleep(0.05)
    stats = last_answer(page)["stats"]
    assert stats.finish_reason == "stopped" and 0 < stats.tokens < 2000, (stats, page.session_state["messages"])
    if isinstance(server, VllmServer):
        stopped_at = time.monotonic()
        while server.running_requests() != 0:
            assert time.monotonic() - stopped_at < 2.0, "vLLM still generates the stopped answer"
            time.sleep(0.05)


def test_a_wrong_key_is_a_clear_error(page, server):
    if not isinstance(server, VllmServer):
        pytest.skip("transformers serve has no authentication")
    page.sidebar.selectbox(key="model_choice").set_value("wrong-key").run()
    page.sidebar.button(key="load_model").click().run()
    run_until(page, "refused the API key (401", timeout=60)


def test_a_server_killed_mid_answer_keeps_the_partial_answer_and_the_page_recovers(page, server):
    connect(page, server, "long")
    seen: list[int] = []
    killer = threading.Thread(target=kill_when_streaming, args=(server, seen))
    killer.start()
    page.chat_input[0].set_value("Tell me a story.").run(timeout=60)
    killer.join()
    assert seen, "the answer was never seen streaming: the server was killed only after 30 s"
    partial = last_answer(page)
    assert partial["role"] == "assistant" and partial["content"] and partial["stats"].finish_reason == "error"
    errors = " ".join(e.value for e in page.chat_message[1].error)
    assert "closed the connection in the middle of the answer" in errors
    server.start()
    connect(page, server, "remote")
    page.sidebar.button(key="clear_conversation").click().run()
    page.chat_input[0].set_value("Who are you?").run()
    assert chat_messages(page)[-1] == ("assistant", KNOWN_ANSWERS["Who are you?"])
    assert "connected" in status_text(page)
