"""The experts at work, on the page: the switch records an answer's routing, the view appears under it with the right
number of tokens and layers, and it survives a refresh and goes into the export; switched off, nothing is recorded."""

from __future__ import annotations

from conversations.store import ConversationStore
from tests.app.conftest import open_page
from tests.support.helpers import KNOWN_ANSWERS


def routing_expanders(at) -> list:
    return [e for e in at.expander if e.label.startswith("Experts at work")]


def charts(at) -> int:
    return len(at.get("vega_lite_chart"))


def test_the_switch_shows_the_experts_under_the_answer_and_it_is_kept(app, db_path):
    app.sidebar.toggle(key="record_routing").set_value(True).run()
    app.chat_input[0].set_value("Who are you?").run()
    assert app.session_state["messages"][-1]["content"] == KNOWN_ANSWERS["Who are you?"]
    (view,) = routing_expanders(app)
    # 24 answer tokens, the last never read back; the demo's prompt is 23 tokens; 2 MoE layers, top-2 of 8
    assert view.label.startswith("Experts at work: 23 answer and 23 prompt tokens × 2 layers, top-2 of 8 experts")
    assert charts(app) == 4  # token map and expert load, for the answer and for the prompt
    assert "1 shared expert, gated" in " ".join(c.value for c in view.caption)

    conv_id = app.query_params["c"]
    refreshed = open_page({"c": conv_id})  # a refresh, or the conversation reopened later
    assert [e.label for e in routing_expanders(refreshed)] == [view.label]

    exported = ConversationStore(db_path).export_json(conv_id)
    routing = exported["messages"][1]["stats"]["routing"]
    assert (routing["layers"], routing["top_k"], routing["num_experts"], len(routing["tokens"])) == (2, 2, 8, 46)

    app.sidebar.toggle(key="record_routing").set_value(False).run()
    app.chat_input[0].set_value("Hello").run()
    assert app.session_state["messages"][-1]["content"] == KNOWN_ANSWERS["Hello"]
    assert app.session_state["messages"][-1]["stats"].routing is None and len(routing_expanders(app)) == 1


def test_without_the_switch_no_routing_is_recorded(app):
    app.chat_input[0].set_value("Hello").run()
    assert app.session_state["messages"][-1]["stats"].routing is None and not routing_expanders(app)
