"""What the main area says above the conversation: the model's kind, one-time notices, a conversation's model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from components import chat, state
from components.markdown import plain
from model_loader.registry import ADDED_SERVER_PREFIX


def render(registry: Any, status: Any, start_load: Callable[[Any], Any] | None) -> None:
    """The loaded model's banner, a notice left by the last run, and an offer to switch to a conversation's model
    (`start_load` None: this person may not load models, so the offer is to ask an admin)."""
    ready = status.state == "ready" and status.model_id in registry.ids
    chat.render_model_banner(registry.get(status.model_id) if ready else None)
    if status.state == "ready" and str(status.model_id or "").startswith(ADDED_SERVER_PREFIX):
        st.warning(f"Answers come from a model server a user of this page connected: {plain(status.info.server)}. "
                   "Your messages, with this conversation, are sent there.", icon=":material/dns:")
    notice = st.session_state.get(state.NOTICE)
    if notice:
        st.session_state[state.NOTICE] = None
        st.info(notice, icon=":material/info:")
    held_with = st.session_state.get(state.CONVERSATION_MODEL)
    if held_with and held_with != status.model_id and held_with in registry.ids:
        spec = registry.get(held_with)
        st.info(f"This conversation was held with **{spec.name}**; {status.model_name or 'no model'} is loaded now.",
                icon=":material/swap_horiz:")
        if start_load is None:
            st.caption(f"Ask an admin to load {spec.name} to go on with it.")
        elif st.button(f"Switch to {spec.name}", key="switch_to_conversation_model"):
            start_load(spec)
            st.rerun()
