"""The conversation: history with its per-answer actions, the message box, and a reply streaming into its bubble."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from common.errors import MoEChatError
from components import routing_view, state
from components.markdown import chat_markdown
from components.throttle import coalesce
from conversations.records import AnswerStats

CURSOR = " ▌"
INPUT_KEY = "chat_input"  # the message box: its value is known before it is drawn (an answer will stream)
REASONS = {"eos": "complete", "length": "hit max new tokens", "stopped": "stopped", "error": "failed"}


@dataclass(frozen=True)
class DrawnAnswer:
    """The answer as shown: its text (possibly partial) and the error that cut it short, if any."""

    text: str
    error: str | None = None


@dataclass(frozen=True)
class HistoryAction:
    """What the user asked of the conversation's messages this run (indexes are into the branch shown)."""

    regenerate: int | None = None  # the answer to write again, as a sibling
    edited: tuple[int, str] | None = None  # the user message to send again changed, as a sibling, and its new text
    move_to: int | None = None  # the sibling (a message id) to show the newest branch of
    delete: int | None = None  # the message (an id) to delete with everything under it


def stats_line(stats: AnswerStats) -> str:
    """ "0.03 s to first token · 412 tokens/s · 71 tokens · complete · greedy" """
    parts = []
    if stats.ttft_s is not None:
        parts.append(f"{stats.ttft_s:.2f} s to first token")
    if stats.tokens_per_s:
        parts.append(f"{stats.tokens_per_s:.0f} tokens/s")
    parts.append(f"{stats.tokens} tokens")
    parts.append(stats.note or REASONS.get(stats.finish_reason, stats.finish_reason))  # a note says who stopped it
    parts.append(stats.sampling)
    if stats.queue_place:
        parts.append(f"waited in line as number {stats.queue_place}")
    return " · ".join(p for p in parts if p)


def _copy_button(text: str, key: str) -> None:
    with st.popover("Copy", icon=":material/content_copy:", key=key):
        st.code(text, language=None, wrap_lines=True)  # its corner button copies to the clipboard


def _edit_box(text: str) -> str | None:
    new = st.text_area("Edit your message", value=text, key="edit_text")
    send, cancel = st.columns(2)
    if send.button("Send", key="edit_send", type="primary", width="stretch") and new.strip():
        st.session_state[state.EDITING] = None
        return new
    if cancel.button("Cancel", key="edit_cancel", width="stretch"):
        st.session_state[state.EDITING] = None
        st.rerun()
    return None


HISTORY_PAGE = 50  # messages drawn at first, and added by each "Show earlier messages"


def _siblings(message: dict[str, Any], busy: bool) -> int | None:
    """"‹ 2/3 ›" under a message with siblings (other edits, other answers); the sibling picked, if one was."""
    siblings = message.get("siblings") or ()
    if len(siblings) < 2 or message.get("id") not in siblings:
        return None
    at = siblings.index(message["id"])
    back, where, ahead, _ = st.columns([1, 1, 1, 6], vertical_alignment="center", gap="small")
    if back.button("‹", key=f"prev_{message['id']}", disabled=busy or at == 0, help="The previous version"):
        return siblings[at - 1]
    where.caption(f"{at + 1}/{len(siblings)}")
    if ahead.button("›", key=f"next_{message['id']}", disabled=busy or at == len(siblings) - 1,
                    help="The next version"):
        return siblings[at + 1]
    return None


def _delete_button(message: dict[str, Any], after: int, busy: bool) -> bool:
    """Delete this message and what hangs under it, asking first."""
    with st.popover("Delete", icon=":material/delete:", key=f"delete_{message['id']}", disabled=busy,
                    help="Delete this message and everything after it, on every branch"):
        st.write(f"Delete this message and the {after:,} after it on this branch (and on any branch under it)?"
                 if after else "Delete this message (and any branch under it)?")
        return st.button("Delete", key=f"delete_confirm_{message['id']}", type="primary", disabled=busy)


def render_history(messages: Sequence[dict[str, Any]], actions: bool, busy: bool = False,
                   marked: int | None = None) -> HistoryAction:
    """The latest messages (earlier ones on demand), each with its actions: versions (‹ n/m ›), Edit on a question,
    Regenerate on an answer, Copy, Delete. `busy`: an answer is about to stream, so nothing may change the branch;
    `marked`: the message a search opened (drawn even if it is far back)."""
    shown = st.session_state.get(state.HISTORY_SHOWN) or HISTORY_PAGE
    first = max(0, len(messages) - shown)
    if first and st.button(f"Show {min(first, HISTORY_PAGE)} earlier messages ({first:,} not shown)",
                           key="show_earlier", icon=":material/expand_less:"):
        st.session_state[state.HISTORY_SHOWN] = shown + HISTORY_PAGE
        st.rerun()
    action = HistoryAction()
    editing = st.session_state.get(state.EDITING)
    for i in range(first, len(messages)):
        message = messages[i]
        key = message.get("id", i)
        with st.chat_message(message["role"]):
            if marked is not None and key == marked:
                st.caption("Found by your search", help="The message the search hit was in")
            if message["role"] == "user" and actions and editing is not None and editing == key:
                edited = _edit_box(message["content"])
                if edited is not None:
                    action = HistoryAction(edited=(i, edited))
                continue
            st.markdown(chat_markdown(message["content"]))
            stats = message.get("stats")
            if stats is not None:
                st.caption(stats_line(stats))
                if stats.error:
                    show_error(stats.error)
                if stats.routing:
                    routing_view.render(stats.routing, key=f"routing_{key}")
            picked = _siblings(message, busy)
            if picked is not None:
                action = HistoryAction(move_to=picked)
            tools = st.columns([1, 1, 1, 4], gap="small")
            if message["role"] == "assistant":
                with tools[0]:
                    _copy_button(message["content"], key=f"copy_{key}")
                if actions and tools[1].button("Regenerate", key=f"regenerate_{key}", icon=":material/refresh:",
                                               disabled=busy):
                    action = HistoryAction(regenerate=i)
            elif actions and tools[1].button("Edit", key=f"edit_{key}", icon=":material/edit:", disabled=busy):
                st.session_state[state.EDITING] = key
                st.rerun()
            if "id" in message:
                with tools[2]:
                    if _delete_button(message, len(messages) - 1 - i, busy):
                        action = HistoryAction(delete=message["id"])
    return action


def render_input(ready: bool, model_name: str | None) -> str | None:
    """The message box; it waits while an answer streams (the answer has its own Stop button).

    It stays enabled when no model is ready: a page drawn before another session unloaded or switched the
    model must not swallow what was typed (see `show_unsent`). It sets no length limit of its own: the browser
    would cut a long paste without a word, so the page refuses it with the reason and gives the text back.
    """
    hint = f"Message {model_name}" if ready and model_name else "Load a model in the sidebar to chat"
    text = st.chat_input(hint, key=INPUT_KEY, submit_mode="disable")
    return text if isinstance(text, str) else None


def stream_reply(chunks: Iterable[str], interval_s: float,
                 on_interrupt: Callable[[str], None] | None = None,
                 on_progress: Callable[[str], None] | None = None) -> DrawnAnswer:
    """Draw a reply as it arrives, at most once per `interval_s`; return it when it ends.

    Drawing is rate-bounded because each redraw re-sends the whole text to the browser. The Stop button under
    the answer reruns the page, which interrupts this run (so does a refresh or a closed tab): `on_interrupt`
    then gets the partial text before the interruption goes on, and the next run draws it finished.
    `on_progress` gets the text so far at each redraw (to save it while it is written).
    """
    placeholder = st.empty()
    stop = st.empty()
    stop.button("Stop", key="stop_answer", icon=":material/stop_circle:",
                help="Stop this answer, or leave the queue. What was written so far is kept.")
    parts: list[str] = []
    error = None
    try:
        try:
            for piece in coalesce(chunks, interval_s):
                parts.append(piece)
                placeholder.markdown(chat_markdown("".join(parts)) + CURSOR)
                if on_progress is not None:
                    on_progress("".join(parts))
        except MoEChatError as exc:
            error = str(exc)
        placeholder.markdown(chat_markdown("".join(parts)))  # drawing can be interrupted too: still inside
        stop.empty()
    except BaseException:  # Streamlit stops or reruns the script by raising inside it
        if on_interrupt is not None:
            on_interrupt("".join(parts))
        raise
    finally:
        cancel = getattr(chunks, "cancel", None)
        if cancel is not None:
            cancel()  # an interrupted page must not leave the generation running
    return DrawnAnswer("".join(parts), error)


def show_error(message: str) -> None:
    st.error(message, icon=":material/error:")


def show_unsent(text: str, why: str) -> None:
    """A message that could not be sent, given back to copy."""
    st.warning(f"{why}: your message was not sent. Here it is to copy, to send again when you can.",
               icon=":material/schedule:")
    st.code(text, language=None, wrap_lines=True)


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
