"""Regenerate, edit and resend, parameters, stats and dollar signs, as a user meets them in the page."""

from __future__ import annotations

from tests.app.conftest import action, chat_messages, stop_midway
from tests.support.helpers import KNOWN_ANSWERS


def send(app, text: str) -> None:
    app.chat_input[0].set_value(text).run()


def captions_of(app, index: int) -> str:
    return " ".join(c.value for c in app.chat_message[index].caption)


def test_regenerate_replaces_only_the_last_answer(app):
    send(app, "Hello")
    send(app, "Who are you?")
    first_exchange = chat_messages(app)[:2]
    app.sidebar.number_input(key="gen_max_new_tokens").set_value(4).run()
    action(app, "regenerate").click().run()
    messages = app.session_state["messages"]
    assert chat_messages(app)[:2] == first_exchange and len(messages) == 4
    assert messages[2]["content"] == "Who are you?"
    assert messages[3]["stats"].tokens == 4 and messages[3]["stats"].finish_reason == "length"
    assert KNOWN_ANSWERS["Who are you?"].startswith(messages[3]["content"])
    assert messages[3]["content"] != KNOWN_ANSWERS["Who are you?"]


def test_edit_and_resend_replaces_the_last_exchange(app):
    send(app, "Hello")
    send(app, "Who are you?")
    action(app, "edit").click().run()
    app.text_area(key="edit_text").set_value("What is 2 + 2?").run()
    app.button(key="edit_send").click().run()
    assert chat_messages(app) == [("user", "Hello"), ("assistant", KNOWN_ANSWERS["Hello"]),
                                  ("user", "What is 2 + 2?"), ("assistant", KNOWN_ANSWERS["What is 2 + 2?"])]


def test_parameters_reach_generation_and_stats_show_under_the_answer(app):
    app.sidebar.toggle(key="gen_do_sample").set_value(True).run()
    app.sidebar.slider(key="gen_temperature").set_value(1.3).run()
    app.sidebar.slider(key="gen_top_p").set_value(0.9).run()
    app.sidebar.number_input(key="gen_top_k").set_value(7).run()
    app.sidebar.number_input(key="gen_seed").set_value(5).run()
    app.sidebar.number_input(key="gen_max_new_tokens").set_value(6).run()
    send(app, "Tell me a story.")
    stats = captions_of(app, 1)
    assert "T 1.3 · top-p 0.9 · top-k 7 · seed 5" in stats  # as recorded by the engine for this answer
    assert "6 tokens" in stats and "hit max new tokens" in stats and "s to first token" in stats
    app.button(key="gen_reset").click().run()
    assert app.sidebar.toggle(key="gen_do_sample").value is False  # the demo's generation_config is greedy


def test_single_dollars_show_as_text(app):
    send(app, "$5 and $10")
    assert app.chat_message[0].markdown[0].value == r"\$5 and \$10"


def test_the_token_counter_and_the_exact_prompt_are_visible(app):
    send(app, "Hello")
    counter = [p.proto.text for p in app.sidebar.get("progress") if p.proto.text.startswith("Conversation:")]
    assert counter and "of 2,048 tokens" in counter[0]
    prompt = [c.value for c in app.sidebar.code if "<|im_start|>system" in c.value]
    assert prompt and "You are a helpful assistant." in prompt[0]  # the template's implicit default, shown


def test_system_prompt_is_sent_first(app):
    app.sidebar.text_area(key="system_prompt").set_value("Answer in one line.").run()
    send(app, "Hello")
    prompt = [c.value for c in app.sidebar.code if "<|im_start|>system" in c.value][0]
    assert prompt.startswith("<|im_start|>system\nAnswer in one line.<|im_end|>\n<|im_start|>user\nHello")


def test_stopping_the_page_mid_answer_keeps_the_partial_answer_and_ends_generation(app):
    import threading
    import time

    from tests.app.conftest import run_until
    from tests.conftest import RANDOM_MODEL_ID, RANDOM_MODEL_NAME

    app.selectbox(key="model_choice").select(RANDOM_MODEL_ID).run()  # an untrained model rarely stops by itself
    app.button(key="load_model").click().run()
    run_until(app, f"{RANDOM_MODEL_NAME}** ready")
    app.sidebar.number_input(key="gen_max_new_tokens").set_value(1900).run()
    app.chat_input[0].set_value("Tell me a story.")
    stop_midway(app, 1.5)
    deadline = time.monotonic() + 5
    while [t for t in threading.enumerate() if t.name == "moe-chat-generate"]:
        assert time.monotonic() < deadline, "the generation kept running after the page stopped"
        time.sleep(0.05)
    last = app.session_state["messages"][-1]
    assert last["role"] == "assistant" and last["content"]
    assert last["stats"].finish_reason == "stopped" and 0 < last["stats"].tokens < 1900


def test_message_box_ignores_blank_input_and_holds_the_length_limit(page_for, models_file):
    page = page_for(models_file, MOE_CHAT_MAX_MESSAGE_CHARS="20")
    send(page, "   ")  # whitespace only: ignored
    assert page.session_state["messages"] == [] and not page.chat_message
    send(page, "x" * 30)  # over the limit: refused with the reason, not cut, and given back to copy
    assert page.session_state["messages"] == []
    assert any("30 characters; the limit is 20" in w.value for w in page.warning)
    assert any(c.value == "x" * 30 for c in page.code)
