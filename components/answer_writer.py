"""Writing one answer: its row in the store, saved as it streams and once more when it ends, its place in line."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import streamlit as st

from chat_engine.interface import Reply
from chat_engine.params import GenerationParams
from common.errors import MoEChatError
from components import state
from components.journal import AnswerSaver
from conversations.records import AnswerStats


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
        sampling=sampling_text(used), note=reply.note if reply is not None else None, error=error,
        queue_place=queue_place,
        routing=reply.routing.to_dict() if result is not None and reply is not None and reply.routing else None)


class AnswerWriter:
    """Keeps one answer, whatever happens to it: `keep` once at the end (into the history and the store),
    `checkpoint` every `save_interval_s` while it streams (a crash loses at most those seconds), `forget` when it
    never started. `saw_place` is told its places in line; the farthest back is saved with it."""

    def __init__(self, saver: AnswerSaver, messages: list[dict[str, Any]], params: GenerationParams,
                 save_interval_s: float) -> None:
        self.saver, self.messages, self.params = saver, messages, params
        self.reply: Reply | None = None
        self._interval_s = save_interval_s
        self._saved_at = time.monotonic()
        self._places: list[int] = []
        self._kept = False

    def saw_place(self, place: int) -> None:
        self._places.append(place)

    def _stats(self, reason: str, error: str | None = None) -> AnswerStats:
        return answer_stats(self.reply, reason, self.params, error, max(self._places, default=None))

    def keep(self, text: str, reason: str, error: str | None = None) -> None:
        """The answer as it ended, into the history and the store (only the first call counts)."""
        if self._kept:
            return
        self._kept = True
        stats = self._stats(reason, error)
        self.messages.append({"role": "assistant", "content": text, "stats": stats, "id": self.saver.message_id})
        try:
            self.saver.save(text, stats)
        except MoEChatError as exc:  # the conversation was changed or deleted in another tab meanwhile
            st.session_state[state.NOTICE] = f"The answer was shown but not saved: {exc}"

    def checkpoint(self, text: str) -> None:
        """The answer so far, saved as cut off, when the last save is `save_interval_s` old."""
        if time.monotonic() - self._saved_at < self._interval_s:
            return
        self._saved_at = time.monotonic()
        stats = replace(self._stats("stopped"), note="cut off: the server stopped while it was being written")
        try:
            self.saver.save(text, stats, partial=True)
        except MoEChatError:
            pass  # the final save says what went wrong; the answer goes on
