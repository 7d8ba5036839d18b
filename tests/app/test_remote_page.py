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
    if model_id.startswith("server:"):  # a server a page user added: everyone's chats would go there
        at.sidebar.checkbox(key="agree_connect").check().run()
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


def add_server(at, address: str, key_env: str = "") -> str:
    """List the models of `address` from the sidebar; what the sidebar says (errors) or the models offered."""
    at.sidebar.text_input(key="server_url").input(address).run()
    at.sidebar.text_input(key="server_key_env").input(key_env).run()
    at.sidebar.button(key="list_server_models").click().run()
    errors = " ".join(e.value for e in at.sidebar.error)
    return errors or " ".join(at.sidebar.selectbox(key="server_model").options)


def test_listing_any_address_that_is_not_a_model_server_says_the_same_thing(page, fake):
    import time

    from tests.support.fake_openai import closed_port

    said = []
    started = time.perf_counter()
    said.append(add_server(page, f"http://127.0.0.1:{closed_port()}/v1"))  # refused
    for status, body in ((401, b'{"error": "Unauthorized"}'), (302, b""), (500, b"Internal Server Error"),
                         (200, b"<html>a router's login page</html>")):
        fake.listing, fake.listing_status = body, status
        said.append(add_server(page, fake.base_url))
    assert all("No OpenAI-compatible server answered with a model list" in s for s in said), said
    assert len({s.split(" at ")[0] for s in said}) == 1
    assert time.perf_counter() - started >= 5.0  # a second each, however fast the target answered


def test_a_listing_shows_only_model_names_and_is_read_only_so_far(page, fake):
    import json

    ids = ["org/good-model", "<img src=x onerror=alert(1)>", "![x](http://attacker/p.png)", "a" * 500, "ok:tag"]
    fake.listing = json.dumps({"object": "list", "data": [{"id": i, "object": "model"} for i in ids]}).encode()
    assert add_server(page, fake.base_url) == "org/good-model ok:tag"
    fake.listing = b'{"object": "list", "data": [' + b'{"id": "m", "object": "model"},' * 2_000_000 + b'{}]}'
    assert len(fake.listing) > 50_000_000
    assert "No OpenAI-compatible server answered" in add_server(page, fake.base_url)  # cut at 1 MiB, not read


def test_only_allowed_hosts_can_be_added(page_for, tmp_path, fake):
    at = page_for(tmp_path / "none.toml", MOE_CHAT_SERVER_HOSTS="10.0.0.5, gpu-box")
    assert "can be added only on 10.0.0.5, gpu-box" in add_server(at, fake.base_url)


def test_a_rows_key_is_never_sent_to_an_address_a_page_user_types(page_for, tmp_path, fake, monkeypatch):
    monkeypatch.setenv("VLLM_ROW_KEY", "the-row-secret")
    models = tmp_path / "models.toml"
    models.write_text(f'[[models]]\nid = "remote"\nname = "Row"\nsource = "openai"\nbase_url = "{fake.base_url}"\n'
                      f'model = "{MODEL}"\napi_key_env = "VLLM_ROW_KEY"\n')
    at = page_for(models)
    with running_fake() as attacker:
        assert "is sent only there" in add_server(at, attacker.base_url, "VLLM_ROW_KEY")
        assert attacker.requests == [] and all("the-row-secret" not in str(r) for r in attacker.requests)
    assert add_server(at, fake.base_url, "VLLM_ROW_KEY") == MODEL  # to its own row's server it goes


def test_connecting_an_added_server_asks_first_and_then_tells_everyone(page, page_for, tmp_path, fake):
    assert add_server(page, fake.base_url) == MODEL
    page.sidebar.button(key="add_server").click().run()
    added = page.session_state["model_choice"]
    assert "every user's next messages" in " ".join(c.value for c in page.sidebar.caption)
    assert page.sidebar.button(key="load_model").disabled  # until the user agrees
    connect(page, added)
    other = page_for(tmp_path / "models.toml")  # another user, whose list does not have that server
    assert any("a model server a user of this page connected" in w.value for w in other.warning)


def test_an_image_in_a_servers_answer_is_a_link_to_click_not_a_fetch(page, fake):
    connect(page)
    fake.mode, fake.answer = "markdown", "Look: ![pixel](http://127.0.0.1:1/track.png) done"
    page.chat_input[0].set_value("Who are you?").run()
    drawn = page.chat_message[1].markdown[0].value
    assert "![" not in drawn and "[🖼 pixel](http://127.0.0.1:1/track.png)" in drawn
