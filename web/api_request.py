"""An OpenAI chat-completions request, checked field by field: what the app can honour, or a refusal naming the field.

Pure: no server, no engine. Everything a request may say is listed here; anything else is refused, never ignored.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass
from typing import Any

from chat_engine.budget import MAX_CHARS_PER_TOKEN
from chat_engine.params import OPTIONS, GenerationParams
from chat_engine.prompt import clean_text
from common.errors import MoEChatError
from common.messages import Message

MAX_BODY_BYTES = 16 << 20  # whatever the model: no request body is read past this
ESCAPED_BYTES_PER_CHAR = 6  # a JSON body may spell every character as \\uXXXX
TOKENS_PER_MESSAGE = 2  # a chat template spends at least this much on each message's markers
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOPS = 4  # as OpenAI allows
# Fields with no effect on the answer, taken and not used (OpenAI's own metadata).
METADATA = {"user", "metadata", "store"}
# OpenAI fields taken only at the value that changes nothing, as clients often send them explicitly.
NEUTRAL = {"logprobs": (False, None), "presence_penalty": (0, 0.0, None), "frequency_penalty": (0, 0.0, None),
           "response_format": ({"type": "text"}, None), "parallel_tool_calls": (True, False, None)}
KNOWN = ({"model", "messages", "stream", "stream_options", "max_completion_tokens", "stop", "n"} | METADATA
         | {option.api for option in OPTIONS.values() if option.api})


class ApiError(MoEChatError):
    """A request the API refuses: the HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


def bearer(authorization: str) -> str:
    """The key of an Authorization header "Bearer <key>" ("" for any other header)."""
    return authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""


def bears_key(authorization: str, key: str | None) -> bool:
    """True when an Authorization header is "Bearer <key>" (compared in constant time: no hints about the key)."""
    given = bearer(authorization)
    return bool(key) and hmac.compare_digest(given.encode("utf-8", "replace"), key.strip().encode("utf-8", "replace"))


def bad(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class RequestLimits:
    """What one request may hold, bounded by the loaded model's context before anything is tokenized: a request
    larger than these could never fit it, so it is refused before the work of finding that out."""

    context: int
    max_message_chars: int

    @property
    def max_total_chars(self) -> int:
        return self.context * MAX_CHARS_PER_TOKEN

    @property
    def max_messages(self) -> int:
        return max(2, self.context // TOKENS_PER_MESSAGE)

    @property
    def body_bytes(self) -> int:
        return min(MAX_BODY_BYTES, (64 << 10) + self.max_total_chars * ESCAPED_BYTES_PER_CHAR)


@dataclass(frozen=True)
class ChatRequest:
    """What one request asks for, in the app's terms."""

    model: str
    messages: tuple[Message, ...]
    params: GenerationParams
    stream: bool
    include_usage: bool
    stop: tuple[str, ...]


def _number(body: dict[str, Any], name: str, low: float, high: float, integer: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        return None
    kind_ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not kind_ok or (not integer and not math.isfinite(value)):
        raise bad(f"{name} must be {'an integer' if integer else 'a number'}; got {value!r}.", name)
    if not low <= value <= high:
        raise bad(f"{name} must be between {low:g} and {high:g}; got {value!r}.", name)
    return value


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad(f"{where}[{j}] is a {kind!r} part; only text parts are supported.", f"{where}[{j}].type")
            texts.append(part["text"])
        return "".join(texts)
    raise bad(f"{where} must be a string or a list of text parts.", where)


def _messages(value: Any, limits: RequestLimits) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise bad("messages must be a non-empty list of {role, content} objects.", "messages")
    if len(value) > limits.max_messages:
        raise bad(f"messages has {len(value):,} entries; no more than {limits.max_messages:,} can fit the model's "
                  f"{limits.context:,}-token context. Send fewer.", "messages", code="context_length_exceeded")
    raw: list[tuple[str, str]] = []
    total = 0
    for i, item in enumerate(value):  # every size is checked before any text is cleaned or tokenized
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise bad(f"{where} must be an object with role and content.", where)
        extra = set(item) - {"role", "content"}
        if extra:
            raise bad(f"{where} has fields this server does not support: {sorted(extra)} (a message's name is not "
                      "passed to the model, so it is refused rather than dropped).", f"{where}.{min(extra)}",
                      code="unsupported_parameter")
        role = ROLES.get(item.get("role"))
        if role is None:
            raise bad(f"{where}.role must be one of {sorted(ROLES)}; got {item.get('role')!r}.", f"{where}.role")
        text = _content(item.get("content"), f"{where}.content")
        if len(text) > limits.max_message_chars:
            raise ApiError(413, f"{where} has {len(text):,} characters; the limit is {limits.max_message_chars:,}.",
                           param=f"{where}.content", code="message_too_long")
        total += len(text)
        if total > limits.max_total_chars:
            raise bad(f"The messages have over {limits.max_total_chars:,} characters, more than the model's "
                      f"{limits.context:,}-token context could hold. Send fewer or shorter messages.", "messages",
                      code="context_length_exceeded")
        raw.append((role, text))
    return tuple({"role": role, "content": clean_text(text)} for role, text in raw)  # as typed text is on the page


def parse(body: Any, defaults: GenerationParams, limits: RequestLimits) -> ChatRequest:
    """The request, checked against what this server honours; raises `ApiError` naming the field otherwise."""
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.", None)
    for name, allowed in NEUTRAL.items():
        if name in body and body[name] not in allowed:
            raise bad(f"This server does not support {name} = {body[name]!r}.", name, code="unsupported_parameter")
    unknown = sorted(set(body) - KNOWN - set(NEUTRAL))
    if unknown:
        raise bad(f"This server does not support {unknown[0]!r} (supported: {', '.join(sorted(KNOWN))}).",
                  unknown[0], code="unsupported_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model is required: the id /v1/models lists.", "model")
    n = _number(body, "n", 1, 128, integer=True)
    if n not in (None, 1):
        raise bad("n must be 1: this server generates one answer per request.", "n", code="unsupported_value")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("stream must be true or false.", "stream")
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise bad("stream_options takes only include_usage, and only with stream: true.", "stream_options")
    stop = body.get("stop")
    if stop is None or isinstance(stop, str | list):
        stops: tuple[Any, ...] | None = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
    else:
        stops = None
    if stops is None or len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise bad(f"stop must be a non-empty string or a list of at most {MAX_STOPS} of them.", "stop")
    if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
        raise bad("Give max_tokens or max_completion_tokens, not both.", "max_completion_tokens")
    limit = ("max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens")
    changes: dict[str, Any] = {}
    for option in OPTIONS.values():
        field = limit if option.name == "max_new_tokens" else option.api
        if field is None or body.get(field) is None:
            continue
        value = body[field]
        # OpenAI's conventions first: temperature 0 is greedy, top_k -1 is off (as in vLLM), any 64-bit seed goes.
        if option.name == "temperature" and value == 0 and not isinstance(value, bool):
            changes["do_sample"] = False
            continue
        if option.name == "top_k" and value == -1 and not isinstance(value, bool):
            value = 0
        if option.name == "seed" and isinstance(value, int) and not isinstance(value, bool):
            if not -(2**63) <= value < 2**64:
                raise bad(f"seed must be a 64-bit integer; got {value!r}.", field)
            value %= 2**32  # the same request gives the same answer
        if option.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        problem = option.problem(value)
        if problem is not None:
            raise bad(problem.replace(option.name, field, 1) + ".", field)
        changes[option.name] = value
        if option.name == "temperature":
            changes["do_sample"] = True
    return ChatRequest(model=model, messages=_messages(body.get("messages"), limits),
                       params=defaults.updated(**changes), stream=stream,
                       include_usage=bool(options and options.get("include_usage")), stop=stops)
