"""One chat turn: the message box, the history's actions, the recorded question, the streamed and kept answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import streamlit as st

from chat_engine.budget import Budget
from chat_engine.interface import EngineStatus, LoadJob, Reply, WaitCallback
from chat_engine.params import GenerationParams
from chat_engine.prompt import check_length, clean_text
from common.errors import ContextOverflowError, MoEChatError, StaleConversationError
from common.messages import Message
from common.settings import Settings
from components import chat, state
from components.answer_writer import AnswerWriter
from components.journal import Journal
from components.markdown import chat_markdown

History = list[dict[str, Any]]  # the page's messages: role, content and, on answers, their stats


class StartReply(Protocol):
    """How a turn asks the engine for an answer (`Engine.chat`)."""

    def __call__(self, messages: Sequence[Message], params: GenerationParams | None = None, *,
                 owner: str | None = None, on_wait: WaitCallback | None = None, client: str | None = None,
                 routing: bool = False) -> Reply: ...


@dataclass(frozen=True)
class TurnContext:
    """What a turn needs from the page: the engine's state and how to ask it for a reply."""

    status: EngineStatus
    job: LoadJob | None
    params: GenerationParams | None  # None: no model ready, or the sidebar's parameters are invalid
    system: str
    start_reply: StartReply
    budget: Callable[[list[Message], int], Budget]  # engine.context_budget: raises when it does not fit
    owner: str  # this browser session
    client: str | None = None  # the browser's address: the model's line is fair between addresses


def to_send(messages: History, system: str) -> list[Message]:
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


def _last_id(messages: History) -> int | None:
    return messages[-1].get("id") if messages else None


def _edit(ctx: TurnContext, journal: Journal, messages: History, index: int, edited: str) -> bool:
    """Send the question at `index` again, changed, as a new branch beside it (the old one is kept), only if it can
    be sent: a refused edit changes nothing (False; the edit box stays open with the text)."""
    candidate = messages[:index] + [{"role": "user", "content": edited}]
    assert ctx.params is not None  # edits are offered only when the parameters are valid
    try:
        ctx.budget(to_send(candidate, ctx.system), ctx.params.max_new_tokens)
    except MoEChatError as exc:
        chat.show_unsent(edited, str(exc).rstrip("."))
        return False
    params = ctx.params.as_dict()
    parent = _last_id(messages[:index])
    added: list[int] = []
    if not _recorded(lambda: added.append(journal.record_user(edited, ctx.status.model_id, ctx.system, params,
                                                              parent, edit=True)), edited, journal):
        return False
    del messages[index:]
    messages.append({"role": "user", "content": edited, "id": added[0]})
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
    journal.reload_if_changed()
    messages: History = st.session_state[state.MESSAGES]
    unsent = st.session_state.pop(state.UNSENT, None)
    if unsent:
        chat.show_unsent(*unsent)
    can_send = ctx.status.state == "ready" and ctx.params is not None
    # An answer streams in this run (a message just sent, or one asked for): nothing may change the branch under it.
    busy = bool(st.session_state.get(state.PENDING_REPLY) or st.session_state.get(chat.INPUT_KEY))
    action = chat.render_history(messages, actions=can_send, busy=busy, marked=st.session_state.get(state.MARKED))
    if can_send and messages and messages[-1]["role"] == "user" and not st.session_state.get(state.PENDING_REPLY):
        _offer_answer()
    prompt = accepted(chat.render_input(can_send, ctx.status.model_name), settings)
    if prompt and not can_send:
        chat.show_unsent(prompt, unready_reason(ctx.status, ctx.job))
        prompt = None
    if action.move_to is not None:
        _change(journal, lambda: journal.move_to(action.move_to))
    if action.delete is not None:
        _change(journal, lambda: journal.delete_branch(action.delete))
    if action.regenerate is not None and messages[action.regenerate]["role"] == "assistant":
        del messages[action.regenerate:]  # the new answer is written beside the old one, which stays
        st.session_state[state.PENDING_REPLY] = True
        st.rerun()
    if action.edited is not None:
        index, text = action.edited
        edited = accepted(text, settings)
        if edited is None or not can_send or not _edit(ctx, journal, messages, index, edited):
            # refused: the box stays open with the text, nothing changed
            st.session_state[state.EDITING] = messages[index].get("id")
    pending = st.session_state.pop(state.PENDING_REPLY, False)
    if prompt:
        if _ask(ctx, journal, messages, prompt):
            _answer(ctx, journal, messages, settings)
    elif pending and can_send:
        _answer(ctx, journal, messages, settings)


def _change(journal: Journal, write: Callable[[], Any]) -> None:
    """Move to another version or delete a branch, then redraw; a stale view is redrawn with the reason."""
    try:
        write()
    except MoEChatError as exc:  # stale (another tab changed it), or the message is gone
        _reload_with_notice(journal, str(exc))
    st.rerun()


def _offer_answer() -> None:
    """A question left without its answer (a crash, a refresh at the wrong moment): offer to answer it now."""
    if st.button("Answer this message", key="answer_last", icon=":material/reply:"):
        st.session_state[state.PENDING_REPLY] = True


def _ask(ctx: TurnContext, journal: Journal, messages: History, prompt: str) -> bool:
    """Record and draw a new question under the last message shown; False (the text given back) when it could not
    be recorded."""
    assert ctx.params is not None  # only a sendable page takes a prompt
    params = ctx.params.as_dict()
    added: list[int] = []
    if not _recorded(lambda: added.append(journal.record_user(prompt, ctx.status.model_id, ctx.system, params,
                                                              _last_id(messages))), prompt, journal):
        return False
    messages.append({"role": "user", "content": prompt, "id": added[0]})
    with st.chat_message("user"):
        st.markdown(chat_markdown(prompt))
    return True


def _answer(ctx: TurnContext, journal: Journal, messages: History, settings: Settings) -> None:
    """Stream the reply to the last user message into a new bubble, keeping whatever happens to it."""
    assert ctx.params is not None  # run() answers only when the parameters are valid
    try:
        saver = journal.answer_saver(_last_id(messages))  # its row, under its question, before it starts
    except MoEChatError as exc:  # deleted in another tab
        _reload_with_notice(journal, str(exc))
    writer = AnswerWriter(saver, messages, ctx.params, settings.save_interval_s)
    with st.chat_message("assistant"):
        line = st.empty()

        def waiting(place: int) -> None:
            writer.saw_place(place)
            line.caption(f"Waiting for the model, which answers {settings.concurrency} request(s) at a time: "
                         f"you are number {place} in line. Stop leaves it.")

        reply = _start(ctx, journal, messages, saver.message_id, waiting)
        if reply is None:
            return
        writer.reply = reply
        _stream(reply, writer, settings.stream_interval_s)
        line.empty()
    st.rerun()  # draws the finished answer with its stats, error and actions


def _start(ctx: TurnContext, journal: Journal, messages: History, row: int | None,
           waiting: WaitCallback) -> Reply | None:
    """The engine's reply to the conversation; None, with the reason shown and the answer's row let go, if refused."""
    assert ctx.params is not None
    try:
        return ctx.start_reply(to_send(messages, ctx.system), ctx.params, owner=ctx.owner, on_wait=waiting,
                               client=ctx.client, routing=bool(st.session_state.get(state.RECORD_ROUTING)))
    except ContextOverflowError as exc:
        refused = messages.pop()  # not sent, not kept in the history; shown so it can be copied
        _forget_rows(journal, row, refused.get("id"))  # the answer's row and the question
        chat.show_error(str(exc))
        st.code(refused["content"], language=None, wrap_lines=True)
    except MoEChatError as exc:
        _forget_rows(journal, row)  # the row taken for an answer that never started
        chat.show_error(str(exc))
    return None


def _stream(reply: Reply, writer: AnswerWriter, interval_s: float) -> None:
    """Draw the answer as it comes; whatever interrupts the page (Stop, a click, a closed tab) keeps what was
    written."""
    try:
        if reply.budget.notice:
            st.caption(reply.budget.notice)
        shown = chat.stream_reply(reply, interval_s, on_interrupt=lambda text: writer.keep(text, "stopped"),
                                  on_progress=writer.checkpoint)
        reason = reply.result.finish_reason if reply.result else ("error" if shown.error else "stopped")
        writer.keep(shown.text, reason, shown.error)
    except BaseException:
        reply.cancel()
        writer.keep("", "stopped")  # only if nothing was kept yet (interrupted before the first text)
        raise


def _forget_rows(journal: Journal, *message_ids: int | None) -> None:
    try:
        journal.forget(*message_ids)
    except MoEChatError:
        pass


def _reload_with_notice(journal: Journal, why: str) -> None:
    """Another tab changed the conversation: show it as it is now, and say so."""
    try:
        journal.reload()
    except MoEChatError as exc:
        why = str(exc)
    st.session_state[state.NOTICE] = why
    st.rerun()
