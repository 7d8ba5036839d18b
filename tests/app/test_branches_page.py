"""Branches on the page: an edit or a regenerated answer of any message is a new version beside the old one, the
‹ n/m › arrows move between them, each tab keeps its own place, a refresh keeps it; search opens a hit on the
branch that holds it; pins and folders order the list."""

from __future__ import annotations

from tests.app.conftest import action, chat_messages, open_page
from tests.support.helpers import KNOWN_ANSWERS

QUESTIONS = ["Hello", "Who are you?", "What is a mixture of experts?", "What can you do?", "What is 2 + 2?"]


def versions(at) -> list[str]:
    """The "n/m" captions under messages with versions, top to bottom."""
    return [c.value for c in at.main.caption if c.value.count("/") == 1 and c.value.replace("/", "").isdigit()]


def drawn(at) -> list[tuple]:
    """Each drawn message: role, text, stats line, whether its experts view is there."""
    return [(m.name, m.markdown[0].value, [c.value for c in m.caption if "tokens" in c.value],
             any(e.label.startswith("Experts at work") for e in m.expander)) for m in at.chat_message]


def ten_messages(app) -> list[tuple]:
    app.sidebar.toggle(key="record_routing").set_value(True).run()
    for question in QUESTIONS:
        app.chat_input[0].set_value(question).run()
        assert not app.exception, app.exception
    before = drawn(app)
    assert len(before) == 10 and all(d[3] for d in before[1::2])  # every answer with its stats and experts
    return before


def test_editing_message_3_branches_and_the_original_ten_come_back_whole(app):
    before = ten_messages(app)
    action(app, "edit", 1).click().run()  # the second question: message 3 of 10
    app.text_area(key="edit_text").set_value("Tell me a story.").run()
    app.button(key="edit_send").click().run()
    after = chat_messages(app)
    assert after[:3] == [m[:2] for m in before[:2]] + [("user", "Tell me a story.")]
    assert after[3] == ("assistant", KNOWN_ANSWERS["Tell me a story."]) and len(after) == 4
    assert versions(app) == ["2/2"]
    conv = app.query_params["c"]

    for tab in (open_page({"c": conv}), open_page({"c": conv})):  # a refresh, and a second tab: the same branch
        assert chat_messages(tab) == after and versions(tab) == ["2/2"]
    action(app, "prev").click().run()  # back: the original ten, their stats and experts views intact
    assert drawn(app) == before and versions(app) == ["1/2"]
    assert chat_messages(open_page({"c": conv})) == [m[:2] for m in before]  # the conversation is left there now
    action(app, "next").click().run()
    assert chat_messages(app) == after


def test_regenerating_an_earlier_answer_keeps_the_old_one(app):
    before = ten_messages(app)
    action(app, "regenerate", 1).click().run()  # the second answer, not the last
    assert chat_messages(app)[:3] == [m[:2] for m in before[:3]] and len(chat_messages(app)) == 4
    assert versions(app) == ["2/2"]
    action(app, "prev").click().run()
    assert drawn(app) == before


def test_each_tab_keeps_its_own_place(app):
    before = ten_messages(app)
    conv = app.query_params["c"]
    other = open_page({"c": conv})
    action(app, "regenerate", 0).click().run()  # this tab: a new version of the first answer
    assert len(chat_messages(app)) == 2 and versions(app) == ["2/2"]
    other.run()  # the other tab stays where it was, and learns of the new version
    assert chat_messages(other) == [m[:2] for m in before] and versions(other) == ["1/2"]


def _history_while_busy() -> None:
    from components import chat

    chat.render_history([{"role": "user", "content": "q", "id": 1, "siblings": (1,)},
                         {"role": "assistant", "content": "a", "id": 2, "siblings": (2, 3)}], actions=True, busy=True)


def test_arrows_and_actions_are_drawn_disabled_while_an_answer_streams():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_history_while_busy).run()
    assert {b.key: b.disabled for b in at.button} == {
        "edit_1": True, "delete_confirm_1": True, "prev_2": True, "next_2": True, "regenerate_2": True,
        "delete_confirm_2": True}
    assert [c.value for c in at.caption] == ["1/2"]


def test_deleting_a_branch_asks_first_and_deletes_what_hangs_under_it(app):
    ten_messages(app)
    action(app, "edit", 1).click().run()
    app.text_area(key="edit_text").set_value("Tell me a story.").run()
    app.button(key="edit_send").click().run()
    edited = app.session_state["messages"][2]["id"]
    app.button(key=f"delete_confirm_{edited}").click().run()  # the confirm inside the Delete popover
    assert len(chat_messages(app)) == 10 and versions(app) == []  # back on the original, the only version left


def test_search_opens_a_hit_on_the_branch_that_holds_it(app):
    ten_messages(app)
    action(app, "edit", 1).click().run()
    app.text_area(key="edit_text").set_value("Tell me a story.").run()
    app.button(key="edit_send").click().run()
    action(app, "prev").click().run()  # the conversation is left on the original branch
    app.sidebar.button(key="clear_conversation").click().run()  # a new chat: the old one is out of sight
    app.sidebar.text_input(key="search_query").set_value("story").run()
    hits = [b for b in app.sidebar.button if b.key.startswith("hit_")]
    assert hits and "**story**" in " ".join(m.value for m in app.sidebar.markdown)
    hits[0].click().run()
    assert chat_messages(app)[2] == ("user", "Tell me a story.") and versions(app) == ["2/2"]
    assert "Found by your search" in [c.value for c in app.main.caption]


def test_pinned_first_and_a_folder_lists_only_its_own(app):
    app.chat_input[0].set_value("Hello").run()
    first = app.query_params["c"]
    app.sidebar.button(key="clear_conversation").click().run()
    app.chat_input[0].set_value("Who are you?").run()
    second = app.query_params["c"]
    listed = [b.key for b in app.sidebar.button if b.key.startswith("open_")]
    assert listed == [f"open_{second}", f"open_{first}"]
    app.sidebar.toggle(key=f"pin_{second}").set_value(False).run()
    app.sidebar.button(key=f"open_{first}").click().run()
    app.sidebar.toggle(key=f"pin_{first}").set_value(True).run()
    app.sidebar.text_input(key=f"folder_{first}").set_value("greetings").run()
    app.sidebar.button(key=f"open_{second}").click().run()
    assert [b.key for b in app.sidebar.button if b.key.startswith("open_")] == [f"open_{first}", f"open_{second}"]
    app.sidebar.selectbox(key="folder_filter").set_value("greetings").run()
    assert [b.key for b in app.sidebar.button if b.key.startswith("open_")] == [f"open_{first}"]


def test_without_full_text_search_the_sidebar_says_so_and_still_finds(page_for, models_file, monkeypatch):
    from conversations import search

    monkeypatch.setattr(search, "has_trigram_fts", lambda conn: False)  # an SQLite built without FTS5
    app = page_for(models_file)
    app.chat_input[0].set_value("What is 2 + 2?").run()
    app.sidebar.button(key="clear_conversation").click().run()
    app.sidebar.text_input(key="search_query").set_value("2 + 2").run()
    assert not app.exception
    assert "no full-text search" in " ".join(c.value for c in app.sidebar.caption)
    assert [b for b in app.sidebar.button if b.key.startswith("hit_")]
