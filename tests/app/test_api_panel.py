"""The API's front door: off without a key (the API says 403 and the page says how to turn it on), the key and the
page password each open only their own door, and the sidebar shows the address and examples when it is on."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx2
import pytest
import streamlit as st
import uvicorn
from starlette.applications import Starlette

from tests.app.conftest import open_page
from web.api import ROUTES


@contextmanager
def api_routes():
    """The app's API routes served over real HTTP on loopback, as Streamlit's server mounts them."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=ROUTES), log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the API routes did not start serving"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def api_caption(at) -> str:
    (panel,) = [e for e in at.sidebar.expander if e.label == "API (OpenAI-compatible)"]
    return " ".join(c.value for c in panel.caption) + " ".join(c.value for c in panel.code)


def test_without_a_key_the_api_is_off_and_both_doors_say_how_to_turn_it_on(monkeypatch, db_path):
    monkeypatch.delenv("MOE_CHAT_API_KEY", raising=False)
    with api_routes() as url:
        for response in (httpx2.get(url + "/models"), httpx2.post(url + "/chat/completions", json={})):
            assert response.status_code == 403
            assert "MOE_CHAT_API_KEY" in response.json()["error"]["message"]
    st.cache_resource.clear()
    at = open_page()
    assert "Off. Start the app with `MOE_CHAT_API_KEY" in api_caption(at)


def test_the_page_password_does_not_open_the_api_nor_the_key_the_page(monkeypatch, db_path):
    monkeypatch.setenv("MOE_CHAT_API_KEY", "the-api-key")
    monkeypatch.setenv("MOE_CHAT_PASSWORD", "the-page-password")
    with api_routes() as url:
        refused = httpx2.get(url + "/models", headers={"Authorization": "Bearer the-page-password"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert httpx2.get(url + "/models", headers={"Authorization": "Bearer the-api-key"}).status_code == 200
    st.cache_resource.clear()
    at = open_page()
    at.text_input(key="password_input").input("the-api-key")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Wrong password."] and not at.sidebar.expander


@pytest.mark.parametrize("page_url", [None, "https://u123-6006.westc.gpuhub.com/"])
def test_with_a_key_the_sidebar_gives_the_address_and_examples(monkeypatch, db_path, page_url):
    from components.api_panel import base_url

    monkeypatch.setenv("MOE_CHAT_API_KEY", "the-api-key")
    st.cache_resource.clear()
    at = open_page()
    text = api_caption(at)
    assert "On, for the loaded model" in text and "the-api-key" not in text  # the key is never shown
    assert 'model="demo-moe"' in text and "chat/completions" in text
    if page_url:
        assert base_url(page_url) == "https://u123-6006.westc.gpuhub.com/v1"


def test_an_unload_stops_an_api_answer_as_it_stops_a_page_answer(monkeypatch, db_path):
    from chat_engine.engine import shared_engine
    from common.settings import Settings
    from model_loader.registry import load_registry

    monkeypatch.setenv("MOE_CHAT_API_KEY", "k")
    engine = shared_engine(Settings.from_env())
    engine.load(load_registry().get("demo-moe"))
    body = {"model": "demo-moe", "messages": [{"role": "user", "content": "Hi"}], "stream": True,
            "max_tokens": 2000, "ignore_eos": True}
    with api_routes() as url, httpx2.stream("POST", url + "/chat/completions", json=body, timeout=60,
                                            headers={"Authorization": "Bearer k"}) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        engine.unload()
        rest = [line for line in lines if line]
    assert "Stopped: the model was unloaded." in rest[-2] and '"error"' in rest[-2] and rest[-1] == "data: [DONE]"
