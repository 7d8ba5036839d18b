"""Keeps this browser session's conversation and the conversation store in step, and the URL pointing at it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from chat_engine.params import GenerationParams
from common.errors import MoEChatError
from components import state
from conversations.records import AnswerStats

QUERY_KEY = "c"  # ?c=<conversation id>: a refresh or a bookmark reopens the conversation


class AnswerSaver:
    """One answer's row in the store: inserted at the first save, rewritten at each later one."""

    def __init__(self, store: Any, conv_id: str | None) -> None:
        self.store, self.conv_id = store, conv_id
        self.position: int | None = None

    def save(self, text: str, stats: AnswerStats, partial: bool | None = None) -> None:
        if self.conv_id is None:
            return
        partial = stats.finish_reason in ("stopped", "error") if partial is None else partial
        if self.position is None:
            self.position = self.store.add_message(self.conv_id, "assistant", text, stats=stats.to_dict(),
                                                   partial=partial)
        else:
            self.store.update_message(self.conv_id, self.position, text, stats=stats.to_dict(), partial=partial)


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
        st.session_state[state.MESSAGES] = [
            {"role": m.role, "content": m.content, **({"stats": AnswerStats.from_dict(m.stats)} if m.stats else {})}
            for m in conv.messages
        ]
        st.session_state[state.CONVERSATION_ID] = conv.id
        st.session_state[state.HISTORY_SHOWN] = None
        st.session_state[state.CONVERSATION_MODEL] = conv.model_id
        st.session_state[state.SYSTEM_PROMPT] = conv.system_prompt
        st.session_state[state.RESTORED_PARAMS] = dict(conv.params)
        st.query_params[QUERY_KEY] = conv.id
        return True

    def start_new(self) -> None:
        st.session_state[state.HISTORY_SHOWN] = None
        st.session_state[state.MESSAGES] = []
        st.session_state[state.CONVERSATION_ID] = None
        st.session_state[state.CONVERSATION_MODEL] = None
        st.session_state[state.EDITING] = False
        if QUERY_KEY in st.query_params:
            del st.query_params[QUERY_KEY]

    def record_user(self, text: str, model_id: str | None, system_prompt: str, params: Mapping[str, Any]) -> None:
        conv_id = self.current_id
        if conv_id is None:
            conv_id = self.store.create(model_id=model_id, system_prompt=system_prompt, params=dict(params))
            st.session_state[state.CONVERSATION_ID] = conv_id
            st.query_params[QUERY_KEY] = conv_id
        else:
            self.store.update_settings(conv_id, model_id, system_prompt, dict(params))
        st.session_state[state.CONVERSATION_MODEL] = model_id
        self.store.add_message(conv_id, "user", text)

    def answer_saver(self, conv_id: str | None) -> AnswerSaver:
        """Where an answer is saved, in `conv_id` taken when it started (a closed tab's session state is gone by its
        end): first as it is written, every few seconds, then finished."""
        return AnswerSaver(self.store, conv_id)

    def truncate(self, keep: int) -> None:
        """Forget stored messages from position `keep` on (Regenerate, Edit)."""
        if self.current_id is not None:
            self.store.truncate(self.current_id, keep)

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
