"""One chat turn: the message box, the history's actions, the recorded question, the streamed and kept answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import streamlit as st

from chat_engine.budget import ContextOverflowError
from chat_engine.interface import EngineStatus, LoadJob, Reply
from chat_engine.params import GenerationParams
from chat_engine.prompt import check_length, clean_text
from common.errors import MoEChatError
from common.settings import Settings
from components import chat, state
from components.journal import Journal
from components.markdown import escape_dollars
from conversations.records import AnswerStats
from conversations.store import StaleConversationError

StartReply = Callable[..., Reply]  # engine.chat(messages, params, owner=..., on_wait=...)


@dataclass(frozen=True)
class TurnContext:
    """What a turn needs from the page: the engine's state and how to ask it for a reply."""

    status: EngineStatus
    job: LoadJob | None
    params: GenerationParams | None  # None: no model ready, or the sidebar's parameters are invalid
    system: str
    start_reply: StartReply
    budget: Callable[[list[dict[str, str]], int], Any]  # engine.context_budget: raises when it does not fit
    owner: str  # this browser session
    client: str | None = None  # the browser's address: the model's line is fair between addresses


def to_send(messages: list[dict[str, Any]], system: str) -> list[dict[str, str]]:
    """The conversation as the engine takes it: role and content only, the system prompt first if one is set."""
    head = [{"role": "system", "content": system}] if system.strip() else []
    return head + [{"role": m["role"], "content": m["content"]} for m in messages]


def unready_reason(status: EngineStatus, job: LoadJob | None) -> str:
    """Why a message cannot be answered now (the page may have been drawn before another session acted)."""
    if job is not None and job.running:
        return f"{job.model_name} is being loaded"
    if status.state == "loading":
        return f"{status.model_name} is being loaded"
    if status.state != "ready":
        return "No model is loaded (load one in the sidebar)"
    return "The generation parameters are invalid (see Generation in the sidebar)"


def sampling_text(params: GenerationParams) -> str:
    if not params.do_sample:
        return "greedy"
    seed = f" · seed {params.seed}" if params.seed is not None else ""
    return f"T {params.temperature:g} · top-p {params.top_p:g} · top-k {params.top_k}{seed}"


def answer_stats(reply: Reply | None, reason: str, params: GenerationParams, error: str | None = None,
                 queue_place: int | None = None) -> AnswerStats:
    """The stats record of an answer: the reply's result when it has one, what is known so far otherwise."""
    result = reply.result if reply is not None else None
    used = reply.params if reply is not None else params  # what the backend actually generated with
    return AnswerStats(
        finish_reason=reason, tokens=result.new_tokens if result else (reply.new_tokens if reply else 0),
        ttft_s=result.time_to_first_token_s if result else None, tokens_per_s=result.tokens_per_s if result else None,
        sampling=sampling_text(used), note=reply.interruption if reply is not None else None, error=error,
        queue_place=queue_place)


def accepted(text: str | None, settings: Settings) -> str | None:
    """Typed text as it may be sent: cleaned, within the length limit; else None, with the reason and the text shown.

    New messages and edits both come through here."""
    if text is None:
        return None
    text = clean_text(text)
    if not text.strip():
        return None
    try:
        check_length(text, settings.max_message_chars)
    except MoEChatError as exc:
        chat.show_unsent(text, str(exc).rstrip("."))
        return None
    return text


def _edit(ctx: TurnContext, journal: Journal, messages: list[dict[str, Any]], edited: str) -> bool:
    """Replace the last exchange with the edited question, only if it can be sent: a refused edit changes nothing
    (False; the edit box stays open with the text)."""
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    candidate = messages[:last_user] + [{"role": "user", "content": edited}]
    try:
        ctx.budget(to_send(candidate, ctx.system), ctx.params.max_new_tokens)
    except MoEChatError as exc:
        chat.show_unsent(edited, str(exc).rstrip("."))
        return False
    if not _recorded(lambda: (journal.truncate(last_user),
                              journal.record_user(edited, ctx.status.model_id, ctx.system, ctx.params.as_dict())),
                     edited, journal):
        return False
    del messages[last_user:]
    messages.append({"role": "user", "content": edited})
    st.session_state[state.PENDING_REPLY] = True
    st.rerun()


def _recorded(write: Callable[[], Any], text: str, journal: Journal | None = None) -> bool:
    """Run a write to the conversation store; if it fails, give the user's text back with the reason and say False.

    When another tab changed the conversation since this one drew it, the view is reloaded first (and the text
    given back on the redrawn page)."""
    try:
        write()
    except StaleConversationError as exc:
        if journal is not None:
            journal.reload()
            st.session_state[state.UNSENT] = (text, str(exc).rstrip("."))
            st.rerun()
        chat.show_unsent(text, str(exc).rstrip("."))
        return False
    except MoEChatError as exc:
        chat.show_unsent(text, str(exc).rstrip("."))
        return False
    return True


def run(ctx: TurnContext, journal: Journal, settings: Settings) -> None:
    """Draw the conversation and the message box; carry out what the user did; stream and keep the answer."""
    messages: list[dict[str, Any]] = st.session_state[state.MESSAGES]
    unsent = st.session_state.pop(state.UNSENT, None)
    if unsent:
        chat.show_unsent(*unsent)
    ready = ctx.status.state == "ready"
    can_send = ready and ctx.params is not None
    action = chat.render_history(messages, actions=can_send)
    if can_send and messages and messages[-1]["role"] == "user" and not st.session_state.get(state.PENDING_REPLY):
        # a question left without its answer (a crash, a refresh at the wrong moment): offer to answer it now
        if st.button("Answer this message", key="answer_last", icon=":material/reply:"):
            st.session_state[state.PENDING_REPLY] = True
    prompt = accepted(chat.render_input(can_send, ctx.status.model_name), settings)
    if prompt and not can_send:
        chat.show_unsent(prompt, unready_reason(ctx.status, ctx.job))
        prompt = None
    if action.regenerate and messages and messages[-1]["role"] == "assistant":
        if _recorded(lambda: journal.truncate(len(messages) - 1), messages[-1]["content"], journal):
            messages.pop()
            st.session_state[state.PENDING_REPLY] = True
            st.rerun()
    if action.edited is not None:
        edited = accepted(action.edited, settings)
        if edited is None or not can_send or not _edit(ctx, journal, messages, edited):
            st.session_state[state.EDITING] = True  # refused: the box stays open with the text, nothing changed
    pending = st.session_state.pop(state.PENDING_REPLY, False)
    if prompt:
        if not _recorded(lambda: journal.record_user(prompt, ctx.status.model_id, ctx.system, ctx.params.as_dict()),
                         prompt, journal):
            return
        messages.append({"role": "user", "content": prompt})
        with st.chat_message("user"):
            st.markdown(escape_dollars(prompt))
    elif not pending or not can_send:
        return
    _answer(ctx, journal, messages, settings)


def _answer(ctx: TurnContext, journal: Journal, messages: list[dict[str, Any]], settings: Settings) -> None:
    """Stream the reply to the last user message into a new bubble, keeping whatever happens to it."""
    params = ctx.params
    assert params is not None  # run() answers only when the parameters are valid

    places: list[int] = []
    saver = None  # the answer's row, taken once the reply has started
    saved_at = [time.monotonic()]

    def keep(text: str, reason: str, error: str | None = None) -> None:
        stats = answer_stats(reply, reason, params, error, max(places, default=None))
        messages.append({"role": "assistant", "content": text, "stats": stats})
        try:
            if saver is not None:
                saver.save(text, stats)
        except MoEChatError as exc:  # the conversation was changed or deleted in another tab meanwhile
            chat.show_error(f"The answer is shown but was not saved: {exc}")

    def checkpoint(text: str) -> None:
        """Save the answer as it is written, every few seconds: a crash loses at most those seconds."""
        if time.monotonic() - saved_at[0] >= settings.save_interval_s:
            saved_at[0] = time.monotonic()
            stats = answer_stats(reply, "stopped", params, queue_place=max(places, default=None))
            if saver is not None:
                saver.save(text, replace(stats, note="cut off: the server stopped while it was being written"),
                           partial=True)

    with st.chat_message("assistant"):
        line = st.empty()

        def waiting(place: int) -> None:
            places.append(place)
            line.caption(f"Waiting for the model, which answers {settings.concurrency} request(s) at a time: "
                         f"you are number {place} in line. Stop leaves it.")

        try:
            reply = ctx.start_reply(to_send(messages, ctx.system), params, owner=ctx.owner, on_wait=waiting,
                                    client=ctx.client)
        except ContextOverflowError as exc:
            refused = messages.pop()  # not sent, not kept in the history; shown so it can be copied
            journal.truncate(len(messages))
            chat.show_error(str(exc))
            st.code(refused["content"], language=None, wrap_lines=True)
            return
        except MoEChatError as exc:
            chat.show_error(str(exc))
            return
        try:
            saver = journal.answer_saver()
        except MoEChatError as exc:  # another tab changed or deleted the conversation meanwhile
            reply.cancel()
            chat.show_error(f"The answer was not started: {exc}")
            return
        if reply.budget.notice:
            st.caption(reply.budget.notice)
        shown = chat.stream_reply(reply, settings.stream_interval_s, on_interrupt=lambda text: keep(text, "stopped"),
                                  on_progress=checkpoint)
        line.empty()
        keep(shown.text, reply.result.finish_reason if reply.result else ("error" if shown.error else "stopped"),
             shown.error)
    st.rerun()  # draws the finished answer with its stats, error and actions
