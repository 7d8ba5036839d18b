"""Input rules hold on every path, and a refused or impossible change leaves the conversation as it was."""

from __future__ import annotations

import pytest

from tests.app.conftest import action, chat_messages, open_page
from tests.support import fake_backend
from tests.support.fake_backend import SCRIPT


@pytest.fixture
def page(fake_page):
    return fake_page(MOE_CHAT_MAX_MESSAGE_CHARS="40")


def send(at, text: str) -> None:
    at.chat_input[0].set_value(text).run()


def edit_last(at, text: str) -> None:
    action(at, "edit").click().run()
    at.text_area(key="edit_text").set_value(text).run()
    at.button(key="edit_send").click().run()


def shown(at) -> list[tuple[str, str]]:
    """The conversation the session holds (the edit box may stand in for the last question)."""
    return [(m["role"], m["content"]) for m in at.session_state["messages"]]


def stored(at) -> list[tuple[str, str]]:
    return chat_messages(open_page({"c": at.query_params["c"]}))


def warnings(at) -> str:
    """What the page says to the user in warnings and notices."""
    return " ".join(w.value for w in [*at.warning, *at.info])


def test_an_edit_is_cleaned_like_a_new_message(page):
    send(page, "Hello")
    edit_last(page, "What\x07 is\x00 2 + 2?")  # control characters typed or pasted into the edit box
    assert shown(page)[0] == ("user", "What is 2 + 2?")
    assert stored(page)[0] == ("user", "What is 2 + 2?")


def test_an_edit_over_the_length_limit_is_refused_and_changes_nothing(page):
    send(page, "Hello")
    before = shown(page)
    edit_last(page, "x" * 50)
    assert "50 characters; the limit is 40" in warnings(page)
    assert [c.value for c in page.code if c.value == "x" * 50]  # the text is given back to copy
    assert shown(page) == before and stored(page) == before
    assert page.text_area(key="edit_text").value == "x" * 50  # the box stays open with the text


def test_an_edit_that_does_not_fit_the_context_keeps_the_exchange_it_would_replace(page, monkeypatch):
    monkeypatch.setattr(fake_backend, "CONTEXT", 100)  # words
    send(page, "Hello")
    before = shown(page)
    page.sidebar.number_input(key="gen_max_new_tokens").set_value(95).run()
    edit_last(page, "one two three four five six seven eight")
    assert "context" in warnings(page)
    assert shown(page) == before and stored(page) == before


def test_a_message_for_a_conversation_deleted_in_another_tab_is_given_back(page):
    send(page, "Hello")
    other = open_page({"c": page.query_params["c"]})
    other.button(key="delete_confirm").click().run()  # the other tab deletes it
    send(page, "Are you there?")
    assert not page.exception  # no traceback
    assert "may have been deleted" in warnings(page)
    assert [c.value for c in page.code if c.value == "Are you there?"]


def test_regenerating_in_a_deleted_conversation_says_why_instead_of_crashing(page):
    send(page, "Hello")
    other = open_page({"c": page.query_params["c"]})
    other.button(key="delete_confirm").click().run()
    action(page, "regenerate").click().run()
    assert not page.exception and "may have been deleted" in warnings(page)


def test_a_conversation_with_bad_stored_stats_and_params_opens_and_chats(page, db_path):
    from conversations.store import ConversationStore

    with ConversationStore(db_path) as store:  # written by an older or tampered file, not through an import
        conv = store.create(model_id="fake", params={"temperature": 5, "do_sample": "yes", "top_k": -1})
        store.add_message(conv, "user", "Hello")
        store.add_message(conv, "assistant", "Hi", stats={"ttft_s": "fast", "tokens": "many", "finish_reason": 3})
    opened = open_page({"c": conv})
    assert not opened.exception
    assert chat_messages(opened) == [("user", "Hello"), ("assistant", "Hi")]
    assert opened.sidebar.slider(key="gen_temperature").value <= 2.0  # the widget's range, not the stored 5
    send(opened, "Again")
    assert chat_messages(opened)[-1] == ("assistant", "You said: Again")


def test_titles_are_drawn_as_plain_text_without_bidi_controls(page, db_path):
    from conversations.store import ConversationStore

    with ConversationStore(db_path) as store:
        conv = store.create(model_id="fake")
        store.add_message(conv, "user", "x")
        store.rename(conv, ":red[ALARM] :material/home: **bold** \u202eevil")
    page.run()
    (button,) = [b for b in page.sidebar.button if b.key == f"open_{conv}"]
    assert "\u202e" not in button.label
    assert button.label.startswith(r"\:red\[ALARM\] \:material/home\: \*\*bold\*\* evil")


def test_a_local_folder_that_vanishes_only_drops_that_model(page, tmp_path):
    import shutil

    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "qwen2_moe"}')
    page.sidebar.text_input(key="local_folder_input").input(str(folder))
    page.button(key="add_local_folder").click().run()
    assert page.selectbox(key="model_choice").value == f"local:{folder.resolve()}"
    assert "my-model (local)" in page.selectbox(key="model_choice").options
    shutil.rmtree(folder)
    page.run()
    assert not page.exception
    assert "my-model (local)" not in page.selectbox(key="model_choice").options
    assert "A model folder you added is gone from the list" in " ".join(i.value for i in page.info)
    send(page, "Hello")  # the tab still chats
    assert chat_messages(page)[-1] == ("assistant", "You said: Hello")


def test_a_conversation_left_on_a_question_offers_to_answer_it(page, db_path):
    from conversations.store import ConversationStore

    with ConversationStore(db_path) as store:  # as a crash before the answer's first save leaves it
        conv = store.create(model_id="fake")
        store.add_message(conv, "user", "Hello")
    opened = open_page({"c": conv})
    opened.button(key="answer_last").click().run()
    assert chat_messages(opened) == [("user", "Hello"), ("assistant", "You said: Hello")]
    assert stored(opened) == chat_messages(opened)


def test_an_answer_is_saved_while_it_is_written(fake_page, db_path):
    import threading
    import time

    from conversations.store import ConversationStore

    SCRIPT.chunk_delay_s = 0.08
    SCRIPT.answers["Tell me a story."] = " ".join(f"w{i}" for i in range(50))  # about 4 s
    fresh = fake_page(MOE_CHAT_SAVE_INTERVAL_S="0.5")
    writer = threading.Thread(target=lambda: send(fresh, "Tell me a story."))
    writer.start()
    time.sleep(2.0)
    with ConversationStore(db_path) as store:  # what a crash at this moment would leave
        (summary,) = store.list_conversations()
        saved = store.get(summary.id).messages
    writer.join(timeout=20)
    assert saved[-1].role == "assistant" and saved[-1].partial and saved[-1].content.startswith("w0 w1")
    assert saved[-1].stats["note"].startswith("cut off")
    assert len(saved[-1].content.split()) < 50
    with ConversationStore(db_path) as store:  # and the finished answer replaced it, in the same place
        final = store.get(summary.id).messages
    assert len(final) == 2 and final[-1].content == SCRIPT.answers["Tell me a story."] and not final[-1].partial


def test_a_15k_message_conversation_reruns_fast_and_shows_the_earlier_messages_on_demand(page, db_path):
    import sqlite3
    import time

    from conversations.store import ConversationStore

    with ConversationStore(db_path) as store:
        conv = store.create(model_id="fake")
        store.add_message(conv, "user", "message 0")
    with sqlite3.connect(db_path) as db:  # 15,000 messages on one branch, written in one go
        db.executemany("INSERT INTO messages (id, conversation_id, parent_id, role, content, stats, partial, "
                       "created_at) VALUES (?, ?, ?, ?, ?, NULL, 0, 0)",
                       [(i + 1, conv, i, "user" if i % 2 == 0 else "assistant", f"message {i}")
                        for i in range(1, 15_000)])
        db.execute("UPDATE conversations SET active_leaf = 15000")
    opened = open_page({"c": conv})
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        opened.run()
        timings.append(time.perf_counter() - started)
    print(f"15,000-message conversation: reruns in {min(timings):.3f} s (best of {timings})")
    assert min(timings) < 0.5, timings
    texts = [m.markdown[0].value for m in opened.chat_message]
    assert len(texts) == 50 and texts[-1] == "message 14999"
    opened.button(key="show_earlier").click().run()
    assert [m.markdown[0].value for m in opened.chat_message][0] == "message 14900"


# Two tabs on one conversation (?c=<id>)

def test_a_stale_tab_regenerating_writes_a_new_version_and_deletes_nothing(page):
    SCRIPT.answers.update({"Hello": "Hi.", "Second": "Two."})
    send(page, "Hello")
    conv = page.query_params["c"]
    other = open_page({"c": conv})
    send(other, "Second")  # the other tab moves on
    action(page, "regenerate").click().run()  # this tab still shows only the first exchange
    assert shown(page) == [("user", "Hello"), ("assistant", "Hi.")]  # the new version, beside the old one
    assert [c.value for c in page.main.caption if "/" in c.value][-1] == "2/2"
    action(page, "prev").click().run()  # back to the old answer: the other tab's exchange is still under it
    assert shown(page) == [("user", "Hello"), ("assistant", "Hi."), ("user", "Second"), ("assistant", "Two.")]


def test_a_send_from_a_stale_tab_becomes_a_branch_with_a_notice(page):
    SCRIPT.answers.update({"Hello": "Hi.", "from A": "A's answer.", "from B": "B's answer."})
    send(page, "Hello")
    conv = page.query_params["c"]
    tab_b = open_page({"c": conv})
    send(page, "from A")
    send(tab_b, "from B")  # drawn before A's exchange: B's question goes beside A's, not after it
    assert "new branch" in warnings(tab_b)
    assert shown(tab_b) == [("user", "Hello"), ("assistant", "Hi."), ("user", "from B"), ("assistant", "B's answer.")]
    assert shown(page) == [("user", "Hello"), ("assistant", "Hi."), ("user", "from A"), ("assistant", "A's answer.")]
    assert stored(page) == shown(tab_b)  # a new tab opens where the conversation was last left
    page.run()
    assert shown(page)[2:] == [("user", "from A"), ("assistant", "A's answer.")]  # each tab keeps its own place


def test_an_answer_being_written_keeps_its_place_when_another_tab_sends(page, db_path):
    from conversations.store import ConversationStore

    SCRIPT.answers.update({"Hello": "Hi.", "from A": "A's answer, in several words."})
    send(page, "Hello")
    conv = page.query_params["c"]

    def other_tab_sends(index: int) -> None:  # while A's answer is being written, a fresh tab sends
        if index == 1:
            with ConversationStore(db_path) as store:
                store.add_message(conv, "user", "from B")  # where the conversation is now: after A's answer

    SCRIPT.on_chunk = other_tab_sends
    send(page, "from A")
    assert stored(page)[2:] == [("user", "from A"), ("assistant", "A's answer, in several words."),
                                ("user", "from B")]  # B's question after A's whole exchange, not inside it


def test_a_conversation_holding_a_50_mb_answer_opens_in_under_a_second(page, db_path):
    import sqlite3
    import time

    from conversations.store import MAX_MESSAGE_CHARS, ConversationStore

    with ConversationStore(db_path) as store:
        conv = store.create(model_id="fake")
        store.add_message(conv, "user", "Tell me everything.")
        store.add_message(conv, "assistant", "x" * (MAX_MESSAGE_CHARS + 10))  # cut as it is written
        assert len(store.get(conv).messages[1].content) < MAX_MESSAGE_CHARS + 200
    with sqlite3.connect(db_path) as db:  # as a database written before the limit holds it: 50 MB in one answer
        db.execute("UPDATE messages SET content = ? WHERE conversation_id = ? AND role = 'assistant'",
                   ("y" * 50_000_000, conv))
    open_page({})  # the page's own imports and first run, not the conversation's
    started = time.perf_counter()
    opened = open_page({"c": conv})
    elapsed = time.perf_counter() - started
    print(f'opened in {elapsed:.3f} s')
    assert elapsed < 1.0, elapsed
    shown_answer = opened.chat_message[1].markdown[0].value
    assert shown_answer.startswith("yyy") and "49,737,856 more characters were not kept" in shown_answer
