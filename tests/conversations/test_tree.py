"""Conversations as trees: branches from edits and regenerated answers, search, pins and folders, tree export."""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path

import pytest

from common.errors import StaleConversationError, StoreError
from conversations import search as search_module
from conversations.search import HIT_END, HIT_START
from conversations.store import ConversationStore


@pytest.fixture
def store(tmp_path: Path):
    with ConversationStore(tmp_path / "c.db") as opened:
        yield opened


def ten(store: ConversationStore) -> tuple[str, list[int]]:
    conv = store.create(model_id="demo-moe")
    ids = [store.add_message(conv, "user" if i % 2 == 0 else "assistant", f"m{i}",
                             stats={"tokens": i, "routing": None} if i % 2 else None) for i in range(10)]
    return conv, ids


def texts(conversation) -> list[str]:
    return [m.content for m in conversation.messages]


def test_an_edit_of_message_3_is_a_branch_and_the_original_ten_stay_whole(store):
    conv, ids = ten(store)
    before = store.get(conv).messages
    edited = store.add(conv, "user", "m2 edited", parent=ids[1])
    assert edited.branched
    store.add_message(conv, "assistant", "answer to the edit")
    now = store.get(conv)
    assert texts(now) == ["m0", "m1", "m2 edited", "answer to the edit"]
    assert now.messages[2].siblings == (ids[2], edited.id) and now.branches == 2  # "2/2"
    back = store.move_to(conv, ids[2])  # the arrow back: the newest path under the original message 3
    assert back == ids[9]
    assert store.move_to(conv, ids[0]) == ids[9]  # a message on the branch shown (a search hit): it stays there
    again = store.get(conv).messages
    assert [(m.id, m.content, m.stats, m.created_at) for m in again] == \
        [(m.id, m.content, m.stats, m.created_at) for m in before]  # the original 10, their stats with them
    assert again[2].siblings == (ids[2], edited.id)  # "1/2" now
    assert store.get(conv, leaf=edited.id).messages[-1].content == "answer to the edit"  # a tab's own place


def test_regenerating_any_answer_keeps_the_old_one(store):
    conv, ids = ten(store)
    store.add_message(conv, "assistant", "m3 again", parent=ids[2])
    assert texts(store.get(conv)) == ["m0", "m1", "m2", "m3 again"]
    assert store.get(conv).messages[-1].siblings == (ids[3], ids[9] + 1)
    assert texts(store.get(conv, leaf=ids[3])) == [f"m{i}" for i in range(10)]  # newest under the old answer


def test_deleting_a_branch_deletes_what_hangs_under_it_and_only_that(store):
    conv, ids = ten(store)
    edit = store.add_message(conv, "user", "m2 edited", parent=ids[1])
    revision = store.get(conv).revision
    store.add_message(conv, "assistant", "moved on")  # another tab
    with pytest.raises(StaleConversationError):
        store.delete_branch(conv, ids[2], expect_revision=revision)
    assert store.delete_branch(conv, ids[2], expect_revision=revision + 1) == 8
    now = store.get(conv)
    assert texts(now) == ["m0", "m1", "m2 edited", "moved on"] and now.messages[2].siblings == (edit,)
    store.delete_branch(conv, edit)
    assert texts(store.get(conv)) == ["m0", "m1"] and store.get(conv).active_leaf == ids[1]


def test_a_branch_15000_messages_deep_is_read_and_deleted(store):
    conv = store.create()
    with sqlite3.connect(store.path) as raw:
        raw.executemany("INSERT INTO messages (id, conversation_id, parent_id, role, content, created_at) "
                        "VALUES (?, ?, ?, 'user', ?, 0)",
                        [(i, conv, i - 1 if i > 1 else None, f"n{i}") for i in range(1, 15_001)])
        raw.execute("UPDATE conversations SET active_leaf = 15000")
    raw.close()
    assert len(store.get(conv).messages) == 15_000
    assert store.delete_branch(conv, 2) == 14_999 and texts(store.get(conv)) == ["n1"]


def test_a_message_under_a_deleted_parent_is_refused_with_the_reason(store):
    conv, ids = ten(store)
    store.delete_branch(conv, ids[4])
    with pytest.raises(StoreError, match="was deleted"):
        store.add_message(conv, "user", "late", parent=ids[6])


# Search

def filled(store: ConversationStore) -> dict[str, str]:
    english = store.create()
    store.add_message(english, "user", "How does expert routing balance the load?")
    store.add_message(english, "assistant", "A router picks the top-k experts for every token.")
    chinese = store.create()
    store.add_message(chinese, "user", "请解释一下混合专家模型的路由机制")
    store.add_message(chinese, "assistant", "每个词元由路由器挑选两个专家，负载均衡损失让专家的使用更平均。")
    return {"english": english, "chinese": chinese}


@pytest.mark.parametrize("built", [True, False], ids=["indexed", "before the index is built"])
def test_search_finds_english_words_and_chinese_phrases_of_any_length(store, built):
    convs = filled(store)
    if built:
        store.index.build()
    assert store.index_state().ready is built
    hits = store.search("routing")
    assert [h.conversation_id for h in hits] == [convs["english"]]
    assert f"{HIT_START}routing{HIT_END}" in hits[0].snippet.lower() or HIT_START in hits[0].snippet
    phrase = store.search("负载均衡")
    assert [h.role for h in phrase] == ["assistant"] and f"{HIT_START}负载均衡{HIT_END}" in phrase[0].snippet
    two = store.search("专家")  # 2 characters: below the trigram's 3, matched without the index
    assert {h.conversation_id for h in two} == {convs["chinese"]} and len(two) == 2
    assert store.search("路由 top-k") == []  # every word must be in one message
    assert [h.conversation_id for h in store.search("top-k experts")] == [convs["english"]]
    assert store.search("100%") == [] and store.search("") == []  # LIKE's wildcards are plain text


def test_the_index_follows_streamed_rewrites_and_deletes(store):
    conv = store.create()
    store.index.build()
    store.add_message(conv, "user", "Tell me a story")
    answer = store.add_message(conv, "assistant", "")
    store.update_message(conv, answer, "Once upon a time there was a dragon")
    assert [h.message_id for h in store.search("dragon")] == [answer]
    store.update_message(conv, answer, "Once upon a time there was a unicorn")
    assert store.search("dragon") == [] and [h.message_id for h in store.search("unicorn")] == [answer]
    store.delete(conv)
    assert store.search("unicorn") == [] and store.search("story") == []


def test_an_index_build_stopped_half_way_goes_on_and_never_indexes_twice(store, tmp_path):
    conv = store.create()
    ids = [store.add_message(conv, "user", f"apple number {i}") for i in range(30)]
    assert not store.index.build_step(batch=10)  # a third done, then the process "stops"
    assert store.index_state().done == 10 and store.index_state().total == 30
    store.update_message(conv, ids[20], "apple changed while unindexed")  # not reached yet: left to the build
    store.add_message(conv, "user", "apple added during the build")
    with ConversationStore(tmp_path / "c.db") as reopened:  # a new process goes on where it stopped
        reopened.index.build()
        assert reopened.index_state().ready
        hits = reopened.search("apple", limit=100)
        assert len(hits) == 31 and len({h.message_id for h in hits}) == 31
        assert [h.message_id for h in reopened.search("unindexed")] == [ids[20]]


def test_without_fts5_search_still_works(store, monkeypatch):
    convs = filled(store)
    monkeypatch.setattr(store.index, "available", False)
    assert store.index.build_step() and not store.index_state().available
    assert [h.conversation_id for h in store.search("混合专家模型")] == [convs["chinese"]]


def test_a_probe_says_whether_this_sqlite_has_the_trigram_tokenizer():
    with sqlite3.connect(":memory:") as conn:
        assert search_module.has_trigram_fts(conn)  # Python 3.11's SQLite 3.40 has it


def test_search_sees_only_its_owners_conversations(store):
    ada, bob = store.for_owner("ada"), store.for_owner("bob")
    ada.add_message(ada.create(), "user", "ada's secret plan")
    store.index.build()
    assert len(ada.search("secret")) == 1 and bob.search("secret") == [] and store.search("secret") == []


# Pins and folders

def test_pinned_first_and_folders_filter(store):
    a, b, c = (store.create(title=t) for t in ("a", "b", "c"))
    store.set_pinned(a, True)
    store.set_folder(b, "  work  stuff ")
    store.set_folder(c, "work stuff")
    assert [s.id for s in store.list_conversations()] == [a, c, b]
    assert [s.id for s in store.list_conversations(folder="work stuff")] == [c, b]
    assert store.folders() == ["work stuff"] and store.summary(a).pinned
    with pytest.raises(StoreError, match="at most 40"):
        store.set_folder(a, "x" * 41)


# Export and import of the tree

def test_export_import_round_trips_every_branch_and_the_active_leaf(store):
    conv, ids = ten(store)
    store.add_message(conv, "user", "m2 edited", parent=ids[1])
    store.add_message(conv, "assistant", "m1 again", parent=ids[0])
    store.move_to(conv, ids[2])
    document = json.loads(json.dumps(store.export_json(conv)))
    copied = store.import_json(document)
    assert store.export_json(copied) == {**document, "created_at": document["created_at"]}
    assert texts(store.get(copied)) == texts(store.get(conv)) and store.get(copied).branches == 3
    markdown = store.export_markdown(conv)
    assert "2 other branches" in markdown and "m9" in markdown and "m2 edited" not in markdown


def test_an_old_export_imports_as_one_branch(store):
    old = {"format": "moe-chat/conversation", "version": 1, "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "stats": None, "partial": False}]}
    conv = store.import_json(old)
    assert texts(store.get(conv)) == ["q", "a"] and store.get(conv).branches == 1


def tree_document(**changes):
    document = {"format": "moe-chat/conversation", "version": 2, "active": 3, "messages": [
        {"id": 1, "parent": None, "role": "user", "content": "q"},
        {"id": 2, "parent": 1, "role": "assistant", "content": "a"},
        {"id": 3, "parent": 1, "role": "assistant", "content": "b"}]}
    document.update(changes)
    return document


def messages_with(index: int, **changes):
    messages = copy.deepcopy(tree_document()["messages"])
    messages[index].update(changes)
    return messages


@pytest.mark.parametrize(("document", "reason"), [
    (tree_document(messages=messages_with(2, id=2)), "id 2 is used twice"),
    (tree_document(messages=messages_with(1, parent=3)), "parent 3 is not an earlier message"),
    (tree_document(messages=messages_with(0, parent=1)), "parent 1 is not an earlier message"),  # a cycle
    (tree_document(messages=messages_with(1, parent=9)), "parent 9 is not an earlier message"),
    (tree_document(active=7), "'active' names message 7"),
    (tree_document(active=None), "'active' must name"),
    (tree_document(messages=messages_with(1, id=True)), "id must be a number"),
    (tree_document(messages=messages_with(1, id=None)), "id must be a number"),
])
def test_an_import_that_is_not_a_tree_is_refused_with_the_reason(store, document, reason):
    with pytest.raises(StoreError, match=reason):
        store.import_json(document)
    assert store.list_conversations() == []
