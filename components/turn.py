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
        queue_place=queue_place,
        routing=reply.routing.to_dict() if result is not None and getattr(reply, "routing", None) else None)


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
    if not _recorded(lambda: journal.replace_question(last_user, edited, ctx.status.model_id, ctx.system,
                                                      ctx.params.as_dict()), edited, journal):
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
            st.session_state[state.UNSENT] = (text, str(exc).rstrip(".")) if text else None
            _reload_with_notice(journal, "" if text else str(exc))
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
        if _recorded(lambda: journal.truncate(len(messages) - 1), "", journal):  # nothing of the user's to give back
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
    try:
        saver = journal.answer_saver()  # the answer's row, taken before it starts: no other exchange lands between
    except StaleConversationError as exc:
        _reload_with_notice(journal, str(exc))
    except MoEChatError as exc:  # deleted in another tab
        chat.show_error(str(exc))
        return
    places: list[int] = []
    saved_at = [time.monotonic()]
    reply: Reply | None = None
    kept = False

    def keep(text: str, reason: str, error: str | None = None) -> None:
        nonlocal kept
        if kept:
            return
        kept = True
        stats = answer_stats(reply, reason, params, error, max(places, default=None))
        messages.append({"role": "assistant", "content": text, "stats": stats})
        try:
            saver.save(text, stats)
        except MoEChatError as exc:  # the conversation was changed or deleted in another tab meanwhile
            st.session_state[state.NOTICE] = f"The answer was shown but not saved: {exc}"

    def checkpoint(text: str) -> None:
        """Save the answer as it is written, every few seconds: a crash loses at most those seconds."""
        if time.monotonic() - saved_at[0] >= settings.save_interval_s:
            saved_at[0] = time.monotonic()
            stats = answer_stats(reply, "stopped", params, queue_place=max(places, default=None))
            try:
                saver.save(text, replace(stats, note="cut off: the server stopped while it was being written"),
                           partial=True)
            except MoEChatError:
                pass  # the final save says what went wrong; the answer goes on

    def forget_row() -> None:
        try:
            journal.truncate(len(messages))  # the row taken for an answer that never started
        except MoEChatError:
            pass

    with st.chat_message("assistant"):
        line = st.empty()

        def waiting(place: int) -> None:
            places.append(place)
            line.caption(f"Waiting for the model, which answers {settings.concurrency} request(s) at a time: "
                         f"you are number {place} in line. Stop leaves it.")

        try:
            reply = ctx.start_reply(to_send(messages, ctx.system), params, owner=ctx.owner, on_wait=waiting,
                                    client=ctx.client, routing=bool(st.session_state.get(state.RECORD_ROUTING)))
        except ContextOverflowError as exc:
            refused = messages.pop()  # not sent, not kept in the history; shown so it can be copied
            try:
                journal.truncate(len(messages))  # the question and the answer's row
            except MoEChatError:
                pass
            chat.show_error(str(exc))
            st.code(refused["content"], language=None, wrap_lines=True)
            return
        except MoEChatError as exc:
            forget_row()
            chat.show_error(str(exc))
            return
        try:  # from here on, whatever interrupts the page (Stop, a click, a closed tab) keeps what was written
            if reply.budget.notice:
                st.caption(reply.budget.notice)
            shown = chat.stream_reply(reply, settings.stream_interval_s,
                                      on_interrupt=lambda text: keep(text, "stopped"), on_progress=checkpoint)
            keep(shown.text, reply.result.finish_reason if reply.result else ("error" if shown.error else "stopped"),
                 shown.error)
            line.empty()
        except BaseException:
            reply.cancel()
            keep("", "stopped")  # only if nothing was kept yet (interrupted before the first text)
            raise
    st.rerun()  # draws the finished answer with its stats, error and actions


def _reload_with_notice(journal: Journal, why: str) -> None:
    """Another tab changed the conversation: show it as it is now, and say so."""
    try:
        journal.reload()
    except MoEChatError as exc:
        why = str(exc)
    st.session_state[state.NOTICE] = why
    st.rerun()
