"""The OpenAI-compatible API of `streamlit run app.py`, on the page's own port, through the official `openai` client
(and once through raw HTTP, for the exact wire format). The server is started headless: nobody opens the page
before the API is called."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import httpx2
import openai
import pytest
import streamlit as st
from streamlit_ws import Session

from tests.app.conftest import chat_messages, open_page, run_until
from tests.server.conftest import run
from tests.support.helpers import KNOWN_ANSWERS
from tests.support.server import running_server

pytestmark = pytest.mark.slow
KEY = "test-api-key"
WHO = [{"role": "user", "content": "Who are you?"}]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("api-server")
    env = {"MOE_CHAT_API_KEY": KEY, "MOE_CHAT_DB": str(home / "conversations.db"), "MOE_CHAT_DEVICE": "cpu",
           "MOE_CHAT_MODELS_FILE": str(home / "none.toml")}
    with running_server(home / "server.log", env) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        deadline = time.monotonic() + 60
        while not client.models.list().data:  # the demo loads at start, with no browser open
            assert time.monotonic() < deadline, "the default model was not loaded at start"
            time.sleep(0.3)
        yield {"url": url, "log": home / "server.log", "client": client}


def test_the_loaded_model_is_listed(api_server):
    models = api_server["client"].models.list().data
    assert [m.id for m in models] == ["demo-moe"] and models[0].owned_by == "moe-chat"
    assert models[0].model_extra["max_model_len"] == 2048


def test_plain_and_streamed_answers_are_the_known_answer(api_server):
    client = api_server["client"]
    whole = client.chat.completions.create(model="demo-moe", messages=WHO, temperature=0)
    assert whole.choices[0].message.content == KNOWN_ANSWERS["Who are you?"]
    assert whole.choices[0].finish_reason == "stop" and whole.usage.completion_tokens == 24
    chunks = list(client.chat.completions.create(model="demo-moe", messages=WHO, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == KNOWN_ANSWERS["Who are you?"] and len([c for c in chunks if c.choices]) > 3
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 23
    assert chunks[-1].usage.completion_tokens == 24 and chunks[-2].choices[0].finish_reason == "stop"


def test_stop_strings_end_the_answer_and_are_left_out(api_server):
    client = api_server["client"]
    answer = KNOWN_ANSWERS["Who are you?"]
    reply = client.chat.completions.create(model="demo-moe", messages=WHO, temperature=0, stop=["tiny", "zzz"])
    assert reply.choices[0].message.content == answer[: answer.index("tiny")]
    assert reply.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="demo-moe", messages=WHO, temperature=0, stop="mixture", stream=True) if c.choices)
    assert streamed == answer[: answer.index("mixture")]
    cut = client.chat.completions.create(model="demo-moe", messages=WHO, temperature=0, max_tokens=3)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3


def test_refusals_come_as_the_clients_own_errors(api_server):
    client = api_server["client"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=api_server["url"] + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError, match="answers with 'demo-moe'"):
        client.chat.completions.create(model="gpt-4o", messages=WHO)
    with pytest.raises(openai.BadRequestError, match="n must be 1") as caught:
        client.chat.completions.create(model="demo-moe", messages=WHO, n=2)
    assert caught.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError, match="does not support logprobs = True"):
        client.chat.completions.create(model="demo-moe", messages=WHO, logprobs=True)
    with pytest.raises(openai.BadRequestError, match="does not support 'tools'"):
        client.chat.completions.create(model="demo-moe", messages=WHO, tools=[{"type": "function", "function": {
            "name": "f", "parameters": {}}}])
    neutral = client.chat.completions.create(model="demo-moe", messages=WHO, temperature=0, logprobs=False,
                                             presence_penalty=0, frequency_penalty=0)
    assert neutral.choices[0].message.content == KNOWN_ANSWERS["Who are you?"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="demo-moe", messages=[{"role": "user", "content": "word " * 3000}])
    assert caught.value.code == "context_length_exceeded" and caught.value.status_code == 400


def test_the_wire_format_is_openais(api_server):
    body = {"model": "demo-moe", "messages": WHO, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx2.stream("POST", api_server["url"] + "/v1/chat/completions", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = "".join(response.iter_text())
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(re.fullmatch(r"data: \{.*\}", event) for event in events[:-2]), events[:3]
    refused = httpx2.post(api_server["url"] + "/v1/chat/completions", json=body, timeout=30)
    assert refused.status_code == 401 and set(refused.json()["error"]) == {"message", "type", "param", "code"}


def test_a_client_that_hangs_up_frees_the_line_for_a_waiting_page_user(api_server):
    body = {"model": "demo-moe", "messages": WHO, "stream": True, "max_tokens": 2000, "ignore_eos": True}
    stream = httpx2.stream("POST", api_server["url"] + "/v1/chat/completions", json=body, timeout=60,
                           headers={"Authorization": f"Bearer {KEY}"})
    response = stream.__enter__()
    lines = response.iter_lines()
    assert next(lines).startswith("data: ")  # the long answer is being generated

    async def page_user():
        session = await Session.open(api_server["url"])
        try:
            asking = asyncio.create_task(session.ask("Hello", timeout_s=60))
            await asyncio.sleep(3.0)  # it waits in line behind the API answer (2,000 tokens: several seconds)
            hung_up = time.perf_counter()
            await asyncio.to_thread(stream.__exit__, None, None, None)  # the API client goes away
            reply = await asking
            return reply, time.perf_counter() - hung_up
        finally:
            await session.close()

    reply, served_after = run(page_user())
    assert reply.text == KNOWN_ANSWERS["Hello"] and reply.max_place >= 1  # it did wait, then was served
    assert served_after < 5.0, f"the page user waited {served_after:.1f} s after the API client left"
    log = api_server["log"].read_text()
    aborted = [int(n) for n in re.findall(r"completion_tokens=(\d+) \S+ \S+ finish=aborted", log)]
    assert aborted and aborted[-1] < 2000  # its generation was stopped, not run to the end


def test_a_page_user_and_two_api_clients_each_get_their_own_answer(api_server):
    client = api_server["client"]
    answers: dict[str, str] = {}

    def api(prompt: str) -> None:
        reply = client.chat.completions.create(model="demo-moe", messages=[{"role": "user", "content": prompt}],
                                               temperature=0)
        answers[prompt] = reply.choices[0].message.content

    async def page():
        session = await Session.open(api_server["url"])
        try:
            return await session.ask("Tell me a story.", timeout_s=90)
        finally:
            await session.close()

    threads = [threading.Thread(target=api, args=(p,)) for p in ("Hello", "What is a mixture of experts?")]
    for t in threads:
        t.start()
    page_reply = run(page())
    for t in threads:
        t.join(60)
    assert page_reply.text == KNOWN_ANSWERS["Tell me a story."]
    assert answers == {p: KNOWN_ANSWERS[p] for p in ("Hello", "What is a mixture of experts?")}


def test_another_moe_chat_chats_through_this_ones_api(api_server, monkeypatch, tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(f'[[models]]\nid = "upstream"\nname = "The other MoE Chat"\nsource = "openai"\n'
                      f'base_url = "{api_server["url"]}"\nmodel = "demo-moe"\napi_key_env = "UPSTREAM_KEY"\n')
    monkeypatch.setenv("MOE_CHAT_MODELS_FILE", str(models))
    monkeypatch.setenv("MOE_CHAT_DB", str(tmp_path / "db.sqlite"))
    monkeypatch.setenv("UPSTREAM_KEY", KEY)
    st.cache_resource.clear()
    try:
        page = open_page()
        page.sidebar.selectbox(key="model_choice").set_value("upstream").run()
        page.sidebar.button(key="load_model").click().run()
        run_until(page, "connected", timeout=60)
        assert "moe-chat server · context 2,048 (server)" in " ".join(s.value for s in page.sidebar.success)
        page.chat_input[0].set_value("Who are you?").run()
        assert chat_messages(page)[1] == ("assistant", KNOWN_ANSWERS["Who are you?"])
    finally:
        from chat_engine.engine import close_shared

        close_shared()
        st.cache_resource.clear()
