"""One OpenAI-compatible server as the app sees it: a client, the models it serves, and its errors in plain words.

Every exception the `openai` and `httpx2` (its HTTP client) libraries raise is translated here and only here.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai

from chat_engine.openai_backend.bounded import BoundedTransport
from common.errors import GenerationError, GenerationTimeout, ModelLoadError, MoEChatError, ServerContextError
from model_loader.registry import SERVED_MODEL_ID, checked_base_url

log = logging.getLogger("moe_chat.servers")
LIST_TIMEOUT_S = 30.0  # the sidebar's "List its models" waits no longer for an answer
FLAVOURS = ("vllm", "sglang", "transformers", "moe-chat", "openai")


@dataclass(frozen=True)
class ServedModel:
    """One entry of the server's /v1/models."""

    id: str
    owned_by: str | None = None
    max_model_len: int | None = None  # vLLM and SGLang report the context they serve
    extra: dict[str, Any] = field(default_factory=dict)



def api_key(env_name: str | None) -> str | None:
    """The key held in the environment variable a row names; a named but empty variable is an error."""
    if not env_name:
        return None
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise ModelLoadError(f"This model's row takes its API key from the environment variable {env_name}, which "
                             f"is not set. Start the app with {env_name}=<the server's key> in its environment.")
    return key


def make_http(base_url: str, key: str | None, connect_s: float, read_s: float) -> httpx2.Client:
    """The one connection pool to a server: connect timeout, a read timeout that is the stall limit, the key, and
    bounded responses (`bounded.py`). Redirects are not followed."""
    headers = {"Accept-Encoding": "identity", **({"Authorization": f"Bearer {key}"} if key else {})}
    transport = BoundedTransport(limits=httpx2.Limits(max_connections=None, max_keepalive_connections=32))
    return httpx2.Client(base_url=root_url(base_url), headers=headers, transport=transport,
                        timeout=httpx2.Timeout(read_s, connect=connect_s))


def make_client(base_url: str, key: str | None, http: httpx2.Client) -> openai.OpenAI:
    """The official client over `http`; no retries: a stream must never be sent twice behind the user's back."""
    return openai.OpenAI(base_url=base_url, api_key=key or "none", max_retries=0, http_client=http)


def root_url(base_url: str) -> str:
    """The server's root (vLLM's /tokenize and /metrics live there, beside /v1)."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


def list_models(client: openai.OpenAI, where: str, connect_s: float, read_s: float = 300.0) -> list[ServedModel]:
    """The models the server serves (raises `ModelLoadError` saying why it could not be asked)."""
    try:
        page = client.models.list()
    except Exception as exc:
        raise ModelLoadError(str(translate(exc, where, connect_s=connect_s, stall_s=read_s))) from exc
    models = []
    for item in page.data:
        extra = dict(item.model_extra or {})
        length = extra.get("max_model_len")
        models.append(ServedModel(item.id, getattr(item, "owned_by", None),
                                  length if isinstance(length, int) and length > 0 else None, extra))
    return models


LISTING_FLOOR_S = 1.0  # a sidebar listing that fails takes at least this long, however it failed
MAX_LISTED = 200  # models a sidebar listing shows at most


def served_model_names(base_url: str, api_key_env: str, settings: Any) -> list[str]:
    """What a server typed into the sidebar serves: only well-formed model ids. Any failure is the same message
    after at least LISTING_FLOOR_S, so a page user cannot use the form to tell apart what listens on an address
    (refused, 401, a redirect, a web page); the server's log says what happened."""
    url = checked_base_url(base_url)
    key = api_key(api_key_env.strip() or None)
    started = time.monotonic()
    try:
        with make_http(url, key, settings.connect_timeout_s, LIST_TIMEOUT_S) as http:
            models = list_models(make_client(url, key, http), url, settings.connect_timeout_s, LIST_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - whatever a scanned address answers, the page user is told the same
        log.info("listing the models of %s failed: %s", url, exc)
        time.sleep(max(0.0, LISTING_FLOOR_S - (time.monotonic() - started)))
        raise ModelLoadError(f"No OpenAI-compatible server answered with a model list at {url}. Check the address "
                             "(it ends in /v1), that the server runs and, if it needs a key, the key variable; "
                             "this app's log says what happened.") from None
    names = [m.id for m in models if isinstance(m.id, str) and SERVED_MODEL_ID.fullmatch(m.id)]
    if len(names) < len(models):
        log.info("%s listed %d model ids that are not model names; they are not shown", url, len(models) - len(names))
    return names[:MAX_LISTED]


def flavour(models: list[ServedModel], stated: str) -> str:
    """Which extra fields the server takes: the row's `server`, else what its /v1/models looks like."""
    if stated != "auto":
        return stated
    owners = {m.owned_by for m in models}
    if "vllm" in owners:
        return "vllm"
    if "sglang" in owners:
        return "sglang"
    if "moe-chat" in owners:  # another MoE Chat's API
        return "moe-chat"
    if any("status" in m.extra for m in models):  # `transformers serve` reports whether each model is loaded
        return "transformers"
    return "openai"


def server_stalled(where: str, seconds: float) -> GenerationTimeout:
    """A server that sent nothing (no byte, or no text) for `seconds`."""
    return GenerationTimeout(f"The server at {where} sent nothing for {seconds:.0f} s, so the answer was stopped. "
                             "It may be overloaded or stuck: check its log, then try again.")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def server_said(exc: BaseException) -> str:
    """The server's own words in an error response: OpenAI's error.message, FastAPI's detail, or the text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        said = inner.get("message") or inner.get("detail") if isinstance(inner, dict) else inner
        if said:
            return str(said)[:300]
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            text = response.text
        except httpx2.ResponseNotRead:
            text = ""
        if text:
            return text.strip()[:300]
    return str(exc)[:300]


_CONTEXT_WORDS = ("context length", "context_length", "maximum context", "max_model_len", "maximum model length",
                  "prompt is too long", "input is too long")
_MODEL_WORDS = ("does not exist", "not found", "pinned", "unknown model", "no model", "is not served")


def translate(exc: BaseException, where: str, *, connect_s: float = 10.0, stall_s: float = 300.0,
              model: str = "") -> MoEChatError:
    """A library exception as one domain error that says what happened and what to do."""
    if isinstance(exc, MoEChatError):
        return exc
    known = next((c for c in _chain(exc) if isinstance(c, MoEChatError)), None)
    if known is not None:  # the app's own reason (a bounded response), wrapped by the client library
        return known
    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc, where, model)
    if type(exc) is openai.APIError and getattr(exc, "body", None):  # an error event inside the stream
        return GenerationError(f"The server at {where} stopped the answer: {server_said(exc)}")
    causes = list(_chain(exc))
    if any(isinstance(c, httpx2.ConnectTimeout) for c in causes):
        return GenerationError(f"The server at {where} did not accept a connection within {connect_s:.0f} s. Check "
                               "the address and that nothing (a firewall, a tunnel that closed) is in the way.")
    if any(isinstance(c, httpx2.ReadTimeout | httpx2.WriteTimeout | httpx2.PoolTimeout) for c in causes):
        return server_stalled(where, stall_s)
    if any(isinstance(c, socket.gaierror) for c in causes) or any(
            "name or service not known" in str(c).lower() or "name resolution" in str(c).lower()
            or "nodename nor servname" in str(c).lower() for c in causes):
        return GenerationError(f"The server name in {where} could not be resolved (DNS). Check the address for a "
                               "typo, or use the server's IP address.")
    if any(isinstance(c, ConnectionRefusedError) or "connection refused" in str(c).lower() for c in causes):
        return GenerationError(f"Connection refused by {where}: no server is listening there. Start it (see "
                               "docs/remote-servers.md), or check the port.")
    if any(isinstance(c, httpx2.RemoteProtocolError | httpx2.ReadError) for c in causes):
        return GenerationError(f"The server at {where} closed the connection in the middle of the answer: it may have "
                               "crashed or been restarted. What arrived is kept; ask again once it is back.")
    if isinstance(exc, openai.APIConnectionError | httpx2.HTTPError):
        reason = next((str(c) for c in causes[1:] if str(c)), str(exc))
        return GenerationError(f"Could not talk to the server at {where} ({reason[:200]}). Check that it is running "
                               "and reachable from this machine.")
    return GenerationError(f"Talking to the server at {where} failed ({type(exc).__name__}: {str(exc)[:200]}).")


def _status_error(exc: openai.APIStatusError, where: str, model: str) -> MoEChatError:
    said = server_said(exc)
    status = exc.status_code
    lowered = said.lower()
    if status == 401:
        return GenerationError(f"The server at {where} refused the API key ({status}: {said[:120]}). Put the right key "
                               "in the environment variable the model's row names (api_key_env) and restart the app.")
    if status == 403:
        return GenerationError(f"The server at {where} refused the request (403: {said[:200]}).")
    if status in (400, 413, 422) and any(word in lowered for word in _CONTEXT_WORDS):
        return ServerContextError(f"The server refused the conversation as too long for its context ({said}). "
                                  "Start a new chat or lower max new tokens; setting the row's context to the "
                                  "server's limit makes the page cut old turns first.")
    if status == 404 and "model" in lowered or "model" in lowered and any(w in lowered for w in _MODEL_WORDS):
        return GenerationError(f"The server at {where} does not serve the model {model!r} ({said}). Pick a name "
                               "its /v1/models lists, in the model's row (model) or in the sidebar.")
    if status == 404:
        return GenerationError(f"{where} has no chat-completions endpoint (404). The address should end in /v1, "
                               "as in http://host:8000/v1.")
    if status == 422:
        return GenerationError(f"The server at {where} refused fields of the request ({said}). Set the row's server "
                               "field to what it is (vllm, sglang, transformers or openai).")
    if status == 429:
        return GenerationError(f"The server at {where} is busy (429: {said}). Wait a moment and ask again.")
    return GenerationError(f"The server at {where} answered {status}: {said}. The conversation is kept; check the "
                           "server's log, then try again.")
