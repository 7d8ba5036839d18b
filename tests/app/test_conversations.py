"""Conversations last: restored from the URL after a refresh, renamed, deleted, exported and imported."""

from __future__ import annotations

import json

import pytest

from conversations.store import ConversationStore
from tests.app.conftest import chat_messages, open_page


def send(app, text: str) -> None:
    app.chat_input[0].set_value(text).run()


def test_a_refresh_with_the_conversation_in_the_url_restores_it(app):
    app.sidebar.text_area(key="system_prompt").set_value("Be brief.").run()
    send(app, "Hello")
    send(app, "Who are you?")
    conv_id = app.query_params["c"]
    before = chat_messages(app)
    assert [role for role, _ in before] == ["user", "assistant", "user", "assistant"]
    assert before[0] == ("user", "Hello") and before[2] == ("user", "Who are you?")
    refreshed = open_page({"c": conv_id})  # a fresh session, as after a browser refresh
    assert chat_messages(refreshed) == before
    assert refreshed.sidebar.text_area(key="system_prompt").value == "Be brief."
    assert "tokens" in " ".join(c.value for c in refreshed.chat_message[1].caption)  # stats were saved too
    unknown = open_page({"c": "no-such-id"})
    assert chat_messages(unknown) == [] and any("was not found" in i.value for i in unknown.info)


def test_list_rename_delete_and_new(app, db_path):
    send(app, "Hello")
    first = app.query_params["c"]
    app.button(key="clear_conversation").click().run()  # New chat
    assert chat_messages(app) == [] and "c" not in app.query_params
    send(app, "What is 2 + 2?")
    second = app.query_params["c"]
    titles = [b.label for b in app.sidebar.button if b.key and b.key.startswith("open_")]
    assert titles == ["What is 2 + 2? (2)", "Hello (2)"]  # newest first, titled by the first message
    app.sidebar.text_input(key=f"title_{second}").input("Arithmetic").run()
    assert app.sidebar.button(key=f"open_{second}").label == "Arithmetic (2)"
    app.sidebar.button(key=f"open_{first}").click().run()
    assert chat_messages(app)[0] == ("user", "Hello") and app.query_params["c"] == first
    app.sidebar.button(key="delete_confirm").click().run()
    assert ConversationStore(db_path).get(first) is None
    assert chat_messages(app) == [] and [b.key for b in app.sidebar.button if b.key == f"open_{first}"] == []


def test_export_json_then_import_gives_identical_messages(app, db_path):
    send(app, "Hello")
    send(app, "$5 and <|im_start|>system")
    conv_id = app.query_params["c"]
    exported = ConversationStore(db_path).export_json(conv_id)  # what the JSON download button serves
    app.button(key="clear_conversation").click().run()
    app.sidebar.file_uploader(key="import_file").set_value(
        ("chat.json", json.dumps(exported).encode(), "application/json")).run()
    app.sidebar.button(key="import_confirm").click().run()
    new_id = app.query_params["c"]
    assert new_id != conv_id
    store = ConversationStore(db_path)
    original, imported = store.get(conv_id), store.get(new_id)
    assert [(m.role, m.content, m.stats, m.partial) for m in imported.messages] == \
        [(m.role, m.content, m.stats, m.partial) for m in original.messages]
    assert [c[1] for c in chat_messages(app)][:1] == ["Hello"]


@pytest.fixture
def locked_app(page_for, models_file):
    return page_for(models_file, MOE_CHAT_PASSWORD="s3cret")


def test_with_a_password_nothing_renders_before_the_right_one(locked_app):
    at = locked_app
    assert not at.chat_input and not at.sidebar.selectbox and not at.chat_message
    at.text_input(key="password_input").input("wrong")
    at.button[0].click().run()  # the form's Enter button
    assert any("Wrong password" in e.value for e in at.error) and not at.chat_input
    at.text_input(key="password_input").input("s3cret")
    at.button[0].click().run()
    assert at.chat_input and at.sidebar.selectbox(key="model_choice")


def test_password_guessing_in_one_tab_gets_slower_and_is_logged(locked_app, monkeypatch, caplog):
    from components import gate

    now = [1000.0]
    monkeypatch.setattr(gate, "THROTTLE", gate.GuessThrottle(free=3, base_s=2.0, per_second=1e6, clock=lambda: now[0]))
    at = locked_app

    def attempt(password: str) -> str:
        at.text_input(key="password_input").input(password)
        at.button[0].click().run()
        return " ".join(e.value for e in at.error)

    for _ in range(3):
        assert "Wrong password" in attempt("guess")  # three tries are free
    assert "try again in 2 s" in attempt("s3cret")  # then a wait, and even the right password is not compared
    assert not at.chat_input
    now[0] += 2.5
    assert "Wrong password" in attempt("guess")  # the 4th wrong try: the next wait doubles
    now[0] += 2.5
    assert "try again in 2 s" in attempt("guess")  # 4 s after the 4th failure, 2.5 s have passed
    now[0] += 2
    attempt("s3cret")
    assert at.chat_input  # in, and the tab starts afresh
    assert gate.THROTTLE.counted == 0
    assert "wrong page password" in caplog.text
