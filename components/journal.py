"""Keeps this browser session's conversation and the conversation store in step, and the URL pointing at it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import streamlit as st

from chat_engine.params import GenerationParams
from common.errors import MoEChatError
from components import state
from conversations.records import AnswerStats

QUERY_KEY = "c"  # ?c=<conversation id>: a refresh or a bookmark reopens the conversation


BEING_WRITTEN = AnswerStats(finish_reason="stopped", note="being written (or cut off if the server stopped)")


class AnswerSaver:
    """One answer's row in the store, taken before the answer starts (so no other tab's exchange can land between
    the question and its answer), then rewritten as the answer is written and when it ends. The row is known by its
    position and creation time, so a row another tab put in its place is never written over."""

    def __init__(self, store: Any, conv_id: str | None, position: int | None, created_at: float | None) -> None:
        self.store, self.conv_id, self.position, self.created_at = store, conv_id, position, created_at

    def save(self, text: str, stats: AnswerStats, partial: bool | None = None) -> None:
        if self.conv_id is None or self.position is None:
            return
        partial = stats.finish_reason in ("stopped", "error") if partial is None else partial
        self.store.update_message(self.conv_id, self.position, text, stats=stats.to_dict(), partial=partial,
                                  created_at=self.created_at)


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

    def open(self, conv_id: str) -> bool:
        """Load a saved conversation's messages and settings into the page."""
        conv = self.store.get(conv_id)
        if conv is None:
            return False
        self._show(conv)
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
        st.session_state[state.CONVERSATION_ID] = None
        st.session_state[state.CONVERSATION_MODEL] = None
        st.session_state[state.EDITING] = False
        if QUERY_KEY in st.query_params:
            del st.query_params[QUERY_KEY]

    def _add(self, conv_id: str, role: str, text: str, stats: AnswerStats | None = None,
             created_at: float | None = None) -> int:
        """Add a message on top of the revision this tab shows (StaleConversationError if another tab changed it)."""
        position = self.store.add_message(conv_id, role, text, stats=stats.to_dict() if stats else None,
                                          partial=stats is not None, created_at=created_at,
                                          expect_revision=st.session_state.get(state.REVISION, 0))
        st.session_state[state.REVISION] = st.session_state.get(state.REVISION, 0) + 1
        return position

    def record_user(self, text: str, model_id: str | None, system_prompt: str, params: Mapping[str, Any]) -> None:
        conv_id = self.current_id
        new = conv_id is None
        if new:
            conv_id = self.store.create(model_id=model_id, system_prompt=system_prompt, params=dict(params))
            st.session_state[state.CONVERSATION_ID] = conv_id
            st.session_state[state.REVISION] = 0
            st.query_params[QUERY_KEY] = conv_id
        self._add(conv_id, "user", text)  # refused when stale: then the settings are left as they are too
        if not new:
            self.store.update_settings(conv_id, model_id, system_prompt, dict(params))
        st.session_state[state.CONVERSATION_MODEL] = model_id

    def replace_question(self, keep: int, text: str, model_id: str | None, system_prompt: str,
                         params: Mapping[str, Any]) -> None:
        """Edit: the messages from `keep` on become the one question `text`, in one step (or nothing changes)."""
        conv_id = self.current_id
        if conv_id is None:
            self.record_user(text, model_id, system_prompt, params)
            return
        self.store.replace_from(conv_id, keep, text, expect_revision=st.session_state.get(state.REVISION, 0))
        st.session_state[state.REVISION] = st.session_state.get(state.REVISION, 0) + 1
        self.store.update_settings(conv_id, model_id, system_prompt, dict(params))
        st.session_state[state.CONVERSATION_MODEL] = model_id

    def answer_saver(self) -> AnswerSaver:
        """The answer's row, taken now in the open conversation: the saver keeps the id and position, since a
        closed tab's session state is gone by the time its answer ends."""
        conv_id = self.current_id
        if conv_id is None:
            return AnswerSaver(self.store, None, None, None)
        created_at = time.time()
        position = self._add(conv_id, "assistant", "", BEING_WRITTEN, created_at=created_at)
        return AnswerSaver(self.store, conv_id, position, created_at)

    def truncate(self, keep: int) -> None:
        """Forget stored messages from position `keep` on (Regenerate, Edit), if no other tab changed them."""
        if self.current_id is not None:
            self.store.truncate(self.current_id, keep, expect_revision=st.session_state.get(state.REVISION, 0))
            st.session_state[state.REVISION] = st.session_state.get(state.REVISION, 0) + 1

    def reload(self) -> None:
        """Show the open conversation's messages as they are in the store now (another tab changed them)."""
        conv = self.store.get(self.current_id) if self.current_id is not None else None
        if conv is None:
            self.start_new()
            return
        self._show(conv)

    def _show(self, conv: Any) -> None:
        st.session_state[state.MESSAGES] = [
            {"role": m.role, "content": m.content, **({"stats": AnswerStats.from_dict(m.stats)} if m.stats else {})}
            for m in conv.messages
        ]
        st.session_state[state.REVISION] = conv.revision
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
                self.open(choice.open_id)
            elif choice.delete_id:
                self.store.delete(choice.delete_id)
                self.start_new()
            elif choice.rename:
                self.store.rename(*choice.rename)
            elif choice.imported is not None:
                self.import_export(choice.imported)
            else:
                return
        except MoEChatError as exc:
            st.session_state[state.NOTICE] = str(exc)
        st.rerun()
