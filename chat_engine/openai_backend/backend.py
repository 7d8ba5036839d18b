"""The remote backend: answers come from an OpenAI-compatible server; this process holds no weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import httpx2
import openai

from chat_engine.backends import SERVED
from chat_engine.budget import Budget, TokenCounter, fit_to_context
from chat_engine.interface import BackendInfo
from chat_engine.openai_backend.counting import estimate
from chat_engine.openai_backend.request import request_body, unsent_fields
from chat_engine.openai_backend.server import translate
from chat_engine.openai_backend.stream import RemoteGeneration
from chat_engine.params import GenerationParams, model_defaults
from chat_engine.prompt import check_messages, render_prompt
from chat_engine.slots import SlotQueue
from common.messages import Message
from common.settings import Settings
from model_loader.registry import ModelSpec


@dataclass(frozen=True)
class Connection:
    """What connecting found out: the clients, the served model, its context and how its tokens are counted."""

    http: httpx2.Client
    client: openai.OpenAI
    flavour: str  # vllm | sglang | transformers | openai
    context: int
    context_source: str  # where the context figure came from, for the status line
    count: TokenCounter | None  # exact counts (tokenizer or server), or None: estimated
    count_source: str
    tokenizer: Any = None
    generation_defaults: dict[str, Any] | None = None
    load_seconds: float | None = None


class OpenAIBackend:
    """Chat with a model served elsewhere. Answers do not wait in this process's line (the server batches them),
    unless the row sets `max_concurrent`."""

    def __init__(self, spec: ModelSpec, connection: Connection, settings: Settings) -> None:
        self.spec = spec
        self.connection = connection
        self.capabilities = replace(SERVED, exact_counts=connection.count is not None)
        self._settings = settings
        limit = spec.max_concurrent
        self.line = SlotQueue(limit, settings.max_waiting_per_client) if limit else None
        self._translate = partial(translate, where=spec.base_url or "?", connect_s=settings.connect_timeout_s,
                                  stall_s=settings.stall_timeout_s, model=spec.model or "")

    @property
    def context(self) -> int:
        return self.connection.context

    def info(self) -> BackendInfo:
        c = self.connection
        warnings = []
        if c.count is None:
            warnings.append("Token counts are estimated: the server has no /tokenize and the model's row names no "
                            "tokenizer (add tokenizer = \"<folder or hub id>\" for exact counts).")
        unsent = unsent_fields(GenerationParams(do_sample=True, top_k=50, repetition_penalty=1.1), c.flavour)
        if unsent:
            warnings.append(f"This server takes only OpenAI's fields: {', '.join(unsent)} are not sent. Set the row's "
                            "server to vllm or sglang if it is one.")
        return BackendInfo(device_summary=f"served by {self.spec.base_url}",
                           dtype=f"model {self.spec.model}",
                           kernels=f"{c.flavour} server · context {c.context:,} ({c.context_source})",
                           load_seconds=c.load_seconds, warnings=tuple(warnings),
                           server=self.spec.base_url or "?")

    def default_params(self) -> GenerationParams:
        return model_defaults(self.connection.generation_defaults or {}, self.spec.generation,
                              self._settings.max_new_tokens)

    def render_prompt(self, messages: Sequence[Message]) -> str:
        tokenizer = self.connection.tokenizer
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            return render_prompt(tokenizer, messages)
        check_messages(messages)
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join(["(The server applies the model's chat template to these messages.)", *lines])

    def budget(self, messages: Sequence[Message], max_new_tokens: int) -> Budget:
        count = self.connection.count
        if count is not None:
            try:
                return fit_to_context(messages, count, self.context, max_new_tokens)
            except (httpx2.HTTPError, KeyError, ValueError, TypeError):  # /tokenize failed: count roughly instead
                pass
        return replace(fit_to_context(messages, estimate, self.context, max_new_tokens), estimated=True)

    def generate(self, messages: Sequence[Message], params: GenerationParams, *,
                 routing: bool = False) -> RemoteGeneration:
        """`routing` is not recorded: a server's routers are out of sight (vLLM and SGLang can return routed
        experts only for whole, non-streamed answers)."""
        budget = self.budget(messages, params.max_new_tokens)
        body = request_body(self.spec.model or "", budget.messages, params, self.connection.flavour)
        return RemoteGeneration(self.connection.client, body, budget=budget, where=self.spec.base_url or "?",
                                translate=self._translate)

    def close(self) -> None:
        """Close the connections (the engine has stopped every answer first); the server keeps its model."""
        self.connection.client.close()
        self.connection.http.close()
