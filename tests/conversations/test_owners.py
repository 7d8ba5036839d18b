"""Private conversations: every store operation answers for one owner; another owner's id is simply not found."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from common.errors import StoreError
from conversations.store import ConversationStore

DATA = Path(__file__).resolve().parents[1] / "data"


def test_another_owners_conversation_is_not_found_by_any_operation(tmp_path):
    with ConversationStore(tmp_path / "c.db") as store:
        ada, bob = store.for_owner("ada"), store.for_owner("bob")
        conv = ada.create("demo-moe")
        ada.add_message(conv, "user", "Ada's secret")
        assert [c.id for c in ada.list_conversations()] == [conv]
        assert bob.list_conversations() == [] and store.list_conversations() == []
        assert bob.get(conv) is None and bob.summary(conv) is None
        for attempt in (lambda: bob.add_message(conv, "user", "x"), lambda: bob.update_message(conv, 1, "x"),
                        lambda: bob.delete_branch(conv, 1), lambda: bob.move_to(conv, 1),
                        lambda: bob.rename(conv, "mine"), lambda: bob.delete(conv),
                        lambda: bob.update_settings(conv, None, "", {}), lambda: bob.export_json(conv),
                        lambda: bob.export_markdown(conv)):
            with pytest.raises(StoreError, match="No saved conversation"):
                attempt()
        assert ada.get(conv).messages[0].content == "Ada's secret"  # nothing of it changed
        imported = bob.import_json(ada.export_json(conv))
        assert [c.id for c in bob.list_conversations()] == [imported]  # an import is its importer's


def test_a_version_3_database_of_the_previous_release_migrates_with_everything_intact(tmp_path):
    """tests/data/conversations-v3.db was written by the previous release's store (schema version 3)."""
    path = tmp_path / "conversations.db"
    shutil.copy(DATA / "conversations-v3.db", path)
    raw = sqlite3.connect(path)
    before_conv = raw.execute("SELECT id, title, title_edited, model_id, system_prompt, params, created_at, "
                              "updated_at, revision FROM conversations ORDER BY id").fetchall()
    before_msg = raw.execute("SELECT conversation_id, role, content, stats, partial, created_at FROM messages "
                             "ORDER BY conversation_id, position").fetchall()
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 3
    raw.close()
    with ConversationStore(path) as store:
        listed = store.list_conversations()
        conversations = [store.get(c.id) for c in listed]
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 5
    assert raw.execute("SELECT id, title, title_edited, model_id, system_prompt, params, created_at, updated_at, "
                       "revision FROM conversations ORDER BY id").fetchall() == before_conv
    # every message kept, each conversation one branch in its old order (ids follow it), left at its last message
    assert raw.execute("SELECT conversation_id, role, content, stats, partial, created_at FROM messages "
                       "ORDER BY conversation_id, id").fetchall() == before_msg
    assert all(parent == (None if first else previous) for first, parent, previous in raw.execute(
        "SELECT LAG(id) OVER w IS NULL, parent_id, LAG(id) OVER w FROM messages "
        "WINDOW w AS (PARTITION BY conversation_id ORDER BY id)"))
    assert raw.execute("SELECT COUNT(*) FROM conversations c WHERE active_leaf IS "
                       "(SELECT MAX(id) FROM messages WHERE conversation_id = c.id)").fetchone()[0] == 4
    assert raw.execute("SELECT COUNT(*) FROM conversations WHERE owner IS NULL").fetchone()[0] == len(before_conv)
    assert len(listed) == 4 and sum(len(c.messages) for c in conversations) == len(before_msg) == 9
    chinese = next(c for c in conversations if c.title == "My renamed chat")
    assert chinese.messages[1].content.startswith("显卡轰鸣夜未眠") and chinese.messages[1].stats["queue_place"] == 2
