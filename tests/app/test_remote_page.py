"""The page driving a model server (tests/support/fake_openai.py, real HTTP on loopback): connect, chat, failures
under the answer, recovery, and adding a server from the sidebar."""

from __future__ import annotations

import pytest

from tests.app.conftest import chat_messages, run_until, status_text
from tests.support.fake_openai import ANSWER, MODEL, running_fake


@pytest.fixture
def fake():
    with running_fake() as server:
        yield server


@pytest.fixture
def page(page_for, tmp_path, fake):
    models = tmp_path / "models.toml"
    models.write_text(f'[[models]]\nid = "remote"\nname = "Fake server model"\nsource = "openai"\n'
                      f'base_url = "{fake.base_url}"\nmodel = "{MODEL}"\n')
    return page_for(models)


def connect(at, model_id: str = "remote") -> None:
    at.sidebar.selectbox(key="model_choice").set_value(model_id).run()
    assert at.sidebar.button(key="load_model").label == "Connect"
    at.sidebar.button(key="load_model").click().run()
    run_until(at, "connected")


def captions(at, index: int) -> str:
    return " ".join(c.value for c in at.chat_message[index].caption)


def sidebar_captions(at) -> str:
    return " ".join(c.value for c in at.sidebar.caption)


def test_connecting_frees_the_local_model_and_says_what_is_connected(page, fake):
    from chat_engine.engine import shared_engine
    from common.settings import Settings

    run_until(page, "Demo MoE (tiny, bundled)** ready")
    connect(page)
    status = status_text(page)
    assert "Fake server model** connected" in status and fake.base_url in status and "context 1,024 (server)" in status
    assert type(shared_engine(Settings.from_env()).backend).__name__ == "OpenAIBackend"  # the demo was freed
    assert f"held by the server ({fake.base_url})" in sidebar_captions(page)
    assert "Does not apply: the server holds" in sidebar_captions(page)
    assert not [e for e in page.sidebar.expander if e.label == "Load options"]


def test_the_answer_streams_in_with_its_stats_and_exact_counts(page, fake):
    connect(page)
    page.chat_input[0].set_value("Who are you?").run()
    assert chat_messages(page) == [("user", "Who are you?"), ("assistant", ANSWER)]
    assert f"{len(ANSWER.split())} tokens" in captions(page, 1) and "complete" in captions(page, 1)
    bars = " ".join(p.proto.text for p in page.sidebar.get("progress"))
    assert "Conversation: " in bars and "about" not in bars  # counted by the server's /tokenize


def test_a_server_dying_mid_answer_keeps_the_partial_answer_then_the_page_recovers(page, fake):
    connect(page)
    fake.mode = "die"
    page.chat_input[0].set_value("Who are you?").run()
    assert chat_messages(page)[1] == ("assistant", " ".join(ANSWER.split()[:3]))
    assert "closed the connection in the middle of the answer" in page.chat_message[1].error[0].value
    fake.mode = "ok"
    page.chat_input[0].set_value("Who are you?").run()
    assert chat_messages(page)[3] == ("assistant", ANSWER)


def test_a_server_is_added_from_the_sidebar_by_picking_from_its_models(page, fake):
    page.sidebar.text_input(key="server_url").input(fake.base_url.removesuffix("/v1")).run()
    page.sidebar.button(key="list_server_models").click().run()
    assert page.sidebar.selectbox(key="server_model").options == [MODEL]
    page.sidebar.button(key="add_server").click().run()
    added = page.session_state["model_choice"]
    assert added == f"server:{MODEL}@{fake.base_url}"
    connect(page, added)
    page.chat_input[0].set_value("Who are you?").run()
    assert chat_messages(page)[1] == ("assistant", ANSWER)


def test_listing_an_unreachable_server_says_why_in_the_sidebar(page):
    page.sidebar.text_input(key="server_url").input("http://127.0.0.1:9/v1").run()
    page.sidebar.button(key="list_server_models").click().run()
    assert "Connection refused by http://127.0.0.1:9/v1" in " ".join(e.value for e in page.sidebar.error)
