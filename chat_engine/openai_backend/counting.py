"""Counting a remote model's tokens: its tokenizer when the row names one, else the server's /tokenize (vLLM,
SGLang), else an estimate that the page marks as one."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import httpx2

from chat_engine.budget import TokenCounter
from chat_engine.prompt import check_messages
from common.messages import Message

TOKENIZE_TIMEOUT_S = 5.0  # counting must never hold a page run (or the engine) for the stall limit
CHARS_PER_TOKEN = 3.0  # English text runs ~4 characters a token, Chinese ~1.5: erring towards more tokens
TOKENS_PER_MESSAGE = 6  # role markers and separators a chat template adds around each message


def estimate(messages: Sequence[Message]) -> int:
    """A rough count for a model whose tokenizer the app cannot see."""
    check_messages(messages)
    chars = sum(len(m["content"]) for m in messages)
    return int(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * (len(messages) + 1)


def server_counter(http: httpx2.Client, model: str) -> TokenCounter | None:
    """Count with the server's own /tokenize and chat template, if it has that endpoint (None otherwise).

    A page run counts the same conversation several times (the sidebar's gauge, the checks before sending), so
    recent counts are remembered rather than asked for again.
    """

    @lru_cache(maxsize=256)
    def tokenize(messages: tuple[tuple[str, str], ...]) -> int:
        response = http.post("/tokenize", json={"model": model, "add_generation_prompt": True,
                                                "messages": [{"role": r, "content": c} for r, c in messages]},
                             timeout=TOKENIZE_TIMEOUT_S)
        response.raise_for_status()
        return int(response.json()["count"])

    def count(messages: Sequence[Message]) -> int:
        check_messages(messages)
        return tokenize(tuple((m["role"], m["content"]) for m in messages))

    try:
        count([{"role": "user", "content": "hi"}])
    except (httpx2.HTTPError, KeyError, ValueError, TypeError):
        return None
    return count
