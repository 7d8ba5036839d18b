"""The page's own behaviour, driven with the fake backend: streaming, Stop, errors, the queue, regenerate and edit."""

from __future__ import annotations

import threading
import time

import pytest

from tests.app.conftest import action, chat_messages, open_page, stop_midway
from tests.support import fake_backend
from tests.support.fake_backend import SCRIPT


@pytest.fixture
def page(fake_page):
    return fake_page()


def send(at, text: str, **run) -> None:
    at.chat_input[0].set_value(text).run(**run)


def captions(at, index: int) -> str:
    return " ".join(c.value for c in at.chat_message[index].caption)


def test_the_fake_model_is_loaded_and_the_answer_streams_in_whole(page):
    assert "Fake MoE** ready" in " ".join(s.value for s in page.sidebar.success)
    SCRIPT.answers["Hello"] = "Hi there, I am the fake model."
    send(page, "Hello")
    assert chat_messages(page) == [("user", "Hello"), ("assistant", "Hi there, I am the fake model.")]
    assert "7 tokens" in captions(page, 1) and "complete" in captions(page, 1) and "greedy" in captions(page, 1)


def test_max_new_tokens_cuts_the_answer_and_says_so(page):
    page.sidebar.number_input(key="gen_max_new_tokens").set_value(3).run()
    send(page, "one two three four five six")
    assert chat_messages(page)[1] == ("assistant", "You said: one")
    assert "3 tokens" in captions(page, 1) and "hit max new tokens" in captions(page, 1)


def test_stop_keeps_the_partial_answer_marked_stopped(page):
    SCRIPT.chunk_delay_s = 0.05
    SCRIPT.answers["Tell me a story."] = " ".join(f"word{i}" for i in range(200))
    page.chat_input[0].set_value("Tell me a story.")
    stop_midway(page, 1.0)
    deadline = time.monotonic() + 5
    while not [m for m in page.session_state["messages"] if m["role"] == "assistant"]:
        assert time.monotonic() < deadline, "the stopped answer was not kept"
        time.sleep(0.05)
    last = page.session_state["messages"][-1]
    assert last["content"].startswith("word0 word1") and last["stats"].finish_reason == "stopped"
    assert 0 < last["stats"].tokens < 200
    page.run()
    assert "stopped" in captions(page, 1)
    assert chat_messages(page)[1][1] == last["content"]


def test_a_generation_error_is_kept_under_the_answer_also_after_a_refresh(page):
    SCRIPT.fail_after = 2
    SCRIPT.answers["Hello"] = "Hi there, I am the fake model."
    send(page, "Hello")
    assert chat_messages(page)[1] == ("assistant", "Hi there,")
    assert [e.value for e in page.chat_message[1].error] == [SCRIPT.failure]
    assert "failed" in captions(page, 1)
    conv = page.query_params["c"]
    refreshed = open_page({"c": conv})  # a refresh reopens it from the database
    assert chat_messages(refreshed)[1] == ("assistant", "Hi there,")
    assert [e.value for e in refreshed.chat_message[1].error] == [SCRIPT.failure]
    SCRIPT.fail_after = None
    action(refreshed, "regenerate").click().run()  # and the chat goes on
    assert chat_messages(refreshed)[1] == ("assistant", "Hi there, I am the fake model.")


def test_a_user_behind_another_request_waits_for_it_and_is_told_their_place(page):
    from chat_engine.params import GenerationParams
    from chat_engine.reply import Reply

    SCRIPT.gate = threading.Event()  # the request ahead (another tab, a script) holds the model until released
    backend = fake_backend.LOADED[-1]
    ahead = Reply(backend.generate([{"role": "user", "content": "first"}], GenerationParams()), GenerationParams(),
                  line=backend.line)
    sent = threading.Thread(target=lambda: send(page, "Who are you?", timeout=30))
    sent.start()
    deadline = time.monotonic() + 10
    while backend.waiting < 1:  # the page's request has joined the line behind it
        assert time.monotonic() < deadline, "the page's request never queued"
        time.sleep(0.02)
    time.sleep(0.3)  # long enough for the page to be told its place
    SCRIPT.gate.set()
    sent.join(timeout=20)
    assert "".join(ahead) == "You said: first"
    assert chat_messages(page)[-1] == ("assistant", "You said: Who are you?")  # each got its own answer
    assert page.session_state["messages"][-1]["stats"].queue_place == 1
    assert "waited in line as number 1" in captions(page, 1)


def test_regenerate_replaces_only_the_last_answer(page):
    SCRIPT.answers.update({"Hello": "Hi.", "Who are you?": "A fake."})
    send(page, "Hello")
    send(page, "Who are you?")
    SCRIPT.answers["Who are you?"] = "Still a fake, said differently."
    action(page, "regenerate").click().run()
    assert chat_messages(page) == [("user", "Hello"), ("assistant", "Hi."), ("user", "Who are you?"),
                                   ("assistant", "Still a fake, said differently.")]
    conv = page.query_params["c"]
    assert chat_messages(open_page({"c": conv})) == chat_messages(page)  # the database agrees


def test_edit_replaces_the_last_exchange_and_resends_it(page):
    SCRIPT.answers.update({"Hello": "Hi.", "Who are you?": "A fake.", "What is 2 + 2?": "4."})
    send(page, "Hello")
    send(page, "Who are you?")
    action(page, "edit").click().run()
    page.text_area(key="edit_text").set_value("What is 2 + 2?").run()
    page.button(key="edit_send").click().run()
    assert chat_messages(page) == [("user", "Hello"), ("assistant", "Hi."), ("user", "What is 2 + 2?"),
                                   ("assistant", "4.")]
    conv = page.query_params["c"]
    assert chat_messages(open_page({"c": conv})) == chat_messages(page)
