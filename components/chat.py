"""The conversation: history, the message box, and a reply streaming into its chat bubble."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from chat_engine.coalesce import coalesce
from model_loader.errors import MoEChatError

CURSOR = " ▌"


@dataclass(frozen=True)
class Reply:
    """The answer as shown: its text (possibly partial) and the error that cut it short, if any."""

    text: str
    error: str | None = None


def render_history(messages: Sequence[dict[str, str]]) -> None:
    for message in messages:
        with st.chat_message(message["role"]):
            st.markdown(message["content"])


def render_input(enabled: bool, model_name: str | None) -> str | None:
    """The message box; returns the text the user just sent, if any."""
    hint = f"Message {model_name}" if enabled and model_name else "Load a model in the sidebar to chat"
    text = st.chat_input(hint, key="chat_input", disabled=not enabled)
    return text if isinstance(text, str) else None


def stream_reply(chunks: Iterable[str], interval_s: float) -> Reply:
    """Draw a reply as it arrives, at most once per `interval_s`; return it when it ends.

    Drawing is rate-bounded because each redraw re-sends the whole text to the browser.
    """
    placeholder = st.empty()
    parts: list[str] = []
    try:
        for piece in coalesce(chunks, interval_s):
            parts.append(piece)
            placeholder.markdown("".join(parts) + CURSOR)
    except MoEChatError as exc:
        placeholder.markdown("".join(parts))
        return Reply("".join(parts), str(exc))
    finally:
        cancel = getattr(chunks, "cancel", None)
        if cancel is not None:
            cancel()  # a rerun that interrupts the page must not leave the generation running
    text = "".join(parts)
    placeholder.markdown(text)
    return Reply(text)


def show_error(message: str) -> None:
    st.error(message, icon=":material/error:")


def render_model_banner(spec: Any) -> None:
    """Say plainly when the loaded model is not a chat assistant."""
    if spec is None:
        return
    if spec.kind == "demo":
        st.info("You are talking to the **bundled demo model**, a tiny toy that knows a few fixed answers. "
                "It is not an assistant: load a real model in the sidebar for real answers.", icon=":material/science:")
    elif spec.kind == "base":
        st.warning(f"**{spec.name}** is a base model: it was never trained to chat, so it continues text rather "
                   "than following instructions. Expect weak answers; prefer its -Chat version.",
                   icon=":material/info:")
