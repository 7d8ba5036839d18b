"""The body of one chat-completions request: every generation parameter stated, in the fields the server takes.

Servers differ when a field is left out (vLLM samples at temperature 1, `transformers serve` follows the
checkpoint's generation_config), so nothing is left to their defaults.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from chat_engine.params import GenerationParams
from common.messages import Message

EXTRA_FIELDS = ("vllm", "sglang", "moe-chat")  # take top_k, repetition_penalty and ignore_eos beside OpenAI's


def request_body(model: str, messages: Sequence[Message], params: GenerationParams, flavour: str) -> dict[str, Any]:
    """Keyword arguments for `client.chat.completions.create(stream=True, **body)`."""
    sample = params.do_sample
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature if sample else 0.0,  # 0: greedy, on every server
        "top_p": params.top_p if sample else 1.0,
        "stream_options": {"include_usage": True},
    }
    if params.seed is not None:
        body["seed"] = params.seed
    if flavour in EXTRA_FIELDS:
        extra: dict[str, Any] = {"top_k": params.top_k if sample and params.top_k > 0 else -1,
                                 "repetition_penalty": params.repetition_penalty}
        if params.ignore_eos:
            extra["ignore_eos"] = True
        body["extra_body"] = extra
    elif flavour == "transformers":
        # `transformers serve` refuses unknown fields (422) but takes a whole generation config as JSON.
        config: dict[str, Any] = {"do_sample": sample, "max_new_tokens": params.max_new_tokens,
                                  "repetition_penalty": params.repetition_penalty}
        if sample:
            config.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
        if params.ignore_eos:
            config["min_new_tokens"] = params.max_new_tokens
        body["extra_body"] = {"generation_config": json.dumps(config)}
    return body


def unsent_fields(params: GenerationParams, flavour: str) -> list[str]:
    """The parameters a plain OpenAI-compatible server has no field for, when they differ from neutral."""
    if flavour in EXTRA_FIELDS or flavour == "transformers":
        return []
    unsent = []
    if params.do_sample and params.top_k > 0:
        unsent.append("top_k")
    if params.repetition_penalty != 1.0:
        unsent.append("repetition_penalty")
    if params.ignore_eos:
        unsent.append("ignore_eos")
    return unsent
