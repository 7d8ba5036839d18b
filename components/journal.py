"""Keeps this browser session's conversation and the conversation store in step, and the URL pointing at it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from chat_engine.params import GenerationParams
from common.errors import MoEChatError
from components import state
from components.chat import HISTORY_PAGE, INPUT_KEY
from conversations.records import AnswerStats

QUERY_KEY = "c"  # ?c=<conversation id>: a refresh or a bookmark reopens the conversation


BEING_WRITTEN = AnswerStats(finish_reason="stopped", note="being written (or cut off if the server stopped)")


BRANCHED = ("Another tab went on from the message before yours, so yours starts a new branch beside it: the ‹ › "
            "arrows under it switch between them.")


class AnswerSaver:
    """One answer's row in the store, taken before the answer starts under the question it answers, then rewritten
    as the answer is written and when it ends; known by its id, so whatever other tabs do, it is written into its
    own message only."""

    def __init__(self, store: Any, conv_id: str | None, message_id: int | None) -> None:
        self.store, self.conv_id, self.message_id = store, conv_id, message_id

    def save(self, text: str, stats: AnswerStats, partial: bool | None = None) -> None:
        if self.conv_id is None or self.message_id is None:
            return
        partial = stats.finish_reason in ("stopped", "error") if partial is None else partial
        self.store.update_message(self.conv_id, self.message_id, text, stats=stats.to_dict(), partial=partial)


class Journal:
    """Every message is written when it is sent or when its answer ends (or stops, or fails)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    @property
    def current_id(self) -> str | None:
        return st.session_state.get(state.CONVERSATION_ID)

    def current(self) -> Any | None:
        """The open conversation's list row (title, size), read on every run: no messages."""
        conv_id = self.current_id
        return self.store.summary(conv_id) if conv_id else None

    def restore_from_url(self) -> None:
        """Once per session: reopen the conversation named in the URL."""
        if st.session_state.get(state.RESTORED):
            return
        st.session_state[state.RESTORED] = True
        conv_id = st.query_params.get(QUERY_KEY)
        if conv_id and not self.open(conv_id):
            st.session_state[state.NOTICE] = f"Conversation {conv_id} was not found (deleted?): this is a new chat."
            del st.query_params[QUERY_KEY]

    def open(self, conv_id: str, at: int | None = None) -> bool:
        """Load a saved conversation's branch and settings into the page: where it was left, or with `at` (a search
        hit) the newest branch through that message, marked."""
        if at is not None:
            self.store.move_to(conv_id, at)
        conv = self.store.get(conv_id)
        if conv is None:
            return False
        self._show(conv)
        st.session_state[state.MARKED] = at
        if at is not None:
            found = next((i for i, m in enumerate(conv.messages) if m.id == at), None)
            if found is not None:  # far back on a long branch: draw back to it
                st.session_state[state.HISTORY_SHOWN] = max(len(conv.messages) - found, HISTORY_PAGE)
        st.session_state[state.CONVERSATION_ID] = conv.id
        st.session_state[state.CONVERSATION_MODEL] = conv.model_id
        st.session_state[state.SYSTEM_PROMPT] = conv.system_prompt
        st.session_state[state.RESTORED_PARAMS] = dict(conv.params)
        st.query_params[QUERY_KEY] = conv.id
        return True

    def start_new(self) -> None:
        st.session_state[state.HISTORY_SHOWN] = None
        st.session_state[state.REVISION] = 0
        st.session_state[state.MESSAGES] = []
        st.session_state[state.LEAF] = None
        st.session_state[state.MARKED] = None
        st.session_state[state.CONVERSATION_ID] = None
        st.session_state[state.CONVERSATION_MODEL] = None
        st.session_state[state.EDITING] = None
        if QUERY_KEY in st.query_params:
            del st.query_params[QUERY_KEY]

    def record_user(self, text: str, model_id: str | None, system_prompt: str, params: Mapping[str, Any],
                    parent: int | None, edit: bool = False) -> int:
        """A question under `parent` (the last message this tab shows; None: a first message) and the settings it
        is asked with; returns its id. An `edit` is a new branch by design; otherwise a parent another tab went on
        from gets a new branch too, and a notice says so."""
        conv_id = self.current_id
        new = conv_id is None
        if new:
            conv_id = self.store.create(model_id=model_id, system_prompt=system_prompt, params=dict(params))
            st.session_state[state.CONVERSATION_ID] = conv_id
            st.query_params[QUERY_KEY] = conv_id
        added = self.store.add(conv_id, "user", text, parent=parent)
        if added.branched and not edit:
            st.session_state[state.NOTICE] = BRANCHED
        if not new:
            self.store.update_settings(conv_id, model_id, system_prompt, dict(params))
        st.session_state[state.CONVERSATION_MODEL] = model_id
        self._changed(added.id)
        return added.id

    def answer_saver(self, parent: int | None) -> AnswerSaver:
        """The answer's row, taken now under its question: the saver keeps the ids, since a closed tab's session
        state is gone by the time its answer ends."""
        conv_id = self.current_id
        if conv_id is None:
            return AnswerSaver(self.store, None, None)
        message_id = self.store.add_message(conv_id, "assistant", "", BEING_WRITTEN.to_dict(), partial=True,
                                            parent=parent)
        self._changed(message_id)
        return AnswerSaver(self.store, conv_id, message_id)

    def move_to(self, message_id: int) -> None:
        """Show the newest branch through another version of a message (the ‹ › arrows)."""
        if self.current_id is not None:
            self._changed(self.store.move_to(self.current_id, message_id))
            self.reload()

    def delete_branch(self, message_id: int) -> None:
        """Delete a message and what hangs under it, if no other tab changed the conversation since this one drew it."""
        if self.current_id is not None:
            self.store.delete_branch(self.current_id, message_id,
                                     expect_revision=st.session_state.get(state.REVISION, 0))
            st.session_state[state.LEAF] = None  # where the store left it
            self.reload()

    def forget(self, *message_ids: int | None) -> None:
        """Delete rows taken for an answer that never started (and its refused question)."""
        for message_id in message_ids:
            if self.current_id is not None and message_id is not None:
                self.store.delete_branch(self.current_id, message_id)
        st.session_state[state.LEAF] = None
        st.session_state[state.RELOAD] = True

    def _changed(self, leaf: int) -> None:
        """This tab is now at `leaf`; the next run reads the branch again (sibling counts included)."""
        st.session_state[state.LEAF] = leaf
        st.session_state[state.RELOAD] = True

    def reload(self) -> None:
        """Show this tab's branch of the open conversation as it is in the store now."""
        st.session_state[state.RELOAD] = False
        conv = self.store.get(self.current_id, leaf=st.session_state.get(state.LEAF)) \
            if self.current_id is not None else None
        if conv is None:
            self.start_new()
            return
        self._show(conv)

    def reload_if_changed(self) -> None:
        """Read this tab's branch again when this tab wrote to it, or when another tab added or deleted messages
        (new versions for the arrows, a branch gone: one cheap query tells). Not under a message being sent: it
        goes where the tab showed it would (a new branch, if another tab went on meanwhile), and not for a
        conversation deleted meanwhile: what was typed is given back with the reason when it is written."""
        if st.session_state.get(state.RELOAD):
            self.reload()
        elif self.current_id is not None and not st.session_state.get(INPUT_KEY):
            revision = self.store.revision(self.current_id)
            if revision is not None and revision != st.session_state.get(state.REVISION):
                self.reload()

    def _show(self, conv: Any) -> None:
        st.session_state[state.MESSAGES] = [
            {"role": m.role, "content": m.content, "id": m.id, "siblings": m.siblings,
             **({"stats": AnswerStats.from_dict(m.stats)} if m.stats else {})}
            for m in conv.messages
        ]
        st.session_state[state.REVISION] = conv.revision
        st.session_state[state.LEAF] = conv.active_leaf
        st.session_state[state.HISTORY_SHOWN] = None

    def import_export(self, data: Any) -> str:
        """Store an uploaded JSON export as a new conversation and open it."""
        conv_id = self.store.import_json(data, check_params=GenerationParams.from_mapping)
        self.open(conv_id)
        return conv_id

    def apply(self, choice: Any) -> None:
        """Carry out what the user chose in the conversation list, then redraw."""
        try:
            if choice.new:
                self.start_new()
            elif choice.open_id:
                self.open(choice.open_id, at=choice.open_at)
            elif choice.delete_id:
                self.store.delete(choice.delete_id)
                self.start_new()
            elif choice.rename:
                self.store.rename(*choice.rename)
            elif choice.pin is not None:
                self.store.set_pinned(*choice.pin)
            elif choice.folder is not None:
                self.store.set_folder(*choice.folder)
            elif choice.imported is not None:
                self.import_export(choice.imported)
            else:
                return
        except MoEChatError as exc:
            st.session_state[state.NOTICE] = str(exc)
        st.rerun()
