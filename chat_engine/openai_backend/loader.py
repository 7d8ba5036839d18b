"""How a remote backend comes to be: the server is asked what it serves (and the tokenizer fetched) while the
current model still answers; connecting then only frees the local model."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chat_engine.budget import FALLBACK_CONTEXT, token_counter
from chat_engine.interface import Backend, LoadStage
from chat_engine.openai_backend.backend import Connection, OpenAIBackend
from chat_engine.openai_backend.counting import server_counter
from chat_engine.openai_backend.server import (
    ServedModel,
    api_key,
    flavour,
    list_models,
    make_client,
    make_http,
    served_model_names,
)
from common.errors import ModelLoadError
from common.settings import Settings
from model_loader.download import DownloadProgress, tokenizer_dir
from model_loader.loader import load_tokenizer
from model_loader.placement import LoadOptions
from model_loader.registry import ModelSpec


class OpenAILoader:
    """Connects registry rows with `source = "openai"` (the `BackendLoader` of backend "openai")."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def list_models(self, base_url: str, api_key_env: str) -> list[str]:
        """What a server typed into the sidebar serves (raises `MoEChatError` saying why it could not be asked)."""
        return served_model_names(base_url, api_key_env, self.settings)

    def same_load(self, backend: Backend, spec: ModelSpec, options: LoadOptions | None) -> bool:
        return False  # connecting again is cheap, and re-reads what the server serves now

    def prepare(self, spec: ModelSpec, options: LoadOptions | None, *, on_stage: Callable[[LoadStage], None],
                on_progress: Callable[[DownloadProgress], None] | None = None,
                cancel: threading.Event | None = None) -> Callable[[], Backend]:
        settings, where = self.settings, spec.base_url or "?"
        started = time.perf_counter()
        on_stage(LoadStage("checking", f"Asking {where} which models it serves..."))
        key = api_key(spec.api_key_env)
        http = make_http(where, key, settings.connect_timeout_s, settings.stall_timeout_s)
        try:
            client = make_client(where, key, http)
            served = _served(list_models(client, where, settings.connect_timeout_s, settings.stall_timeout_s), spec)
            kind = flavour([served], spec.server)
            tokenizer, folder = None, None
            if spec.tokenizer:
                on_stage(LoadStage("downloading", f"Fetching the tokenizer of {spec.model} ({spec.tokenizer})..."))
                folder = tokenizer_dir(spec.tokenizer, settings, on_progress=on_progress, cancel=cancel,
                                       remote_code=spec.trust_remote_code)
                tokenizer = load_tokenizer(spec, folder)
            if tokenizer is not None and getattr(tokenizer, "chat_template", None):
                tokenizer.model_max_length = int(1e30)  # the budget enforces the context, without warnings
                count, count_source = token_counter(tokenizer), "tokenizer"
            else:
                count = server_counter(http, served.id) if kind in ("vllm", "sglang", "openai") else None
                count_source = "server" if count is not None else "estimate"
            context, context_source = _context(spec, served, folder, settings)
        except BaseException:
            http.close()
            raise
        connection = Connection(http=http, client=client, flavour=kind, context=context,
                                context_source=context_source, count=count, count_source=count_source,
                                tokenizer=tokenizer, generation_defaults=_json(folder, "generation_config.json"),
                                load_seconds=time.perf_counter() - started)

        def connect() -> Backend:
            on_stage(LoadStage("loading", f"Connecting to {spec.model} at {where}..."))
            return OpenAIBackend(spec, connection, settings)

        return connect


def _served(models: list[ServedModel], spec: ModelSpec) -> ServedModel:
    for model in models:
        if model.id == spec.model:
            return model
    names = ", ".join(repr(m.id) for m in models[:10]) or "nothing"
    raise ModelLoadError(f"{spec.base_url} does not serve {spec.model!r}; it serves {names}. Put one of those in "
                         "the row's model field, or add the server again from the sidebar and pick from its list.")


def _context(spec: ModelSpec, served: ServedModel, folder: Path | None, settings: Settings) -> tuple[int, str]:
    """The window answers must fit: the server's limit and the row's, whichever is smaller, else the model's
    config (from the tokenizer's folder), else a safe guess."""
    stated = [(n, where) for n, where in ((served.max_model_len, "server"), (spec.context, "row")) if n]
    if not stated:
        config = _json(folder, "config.json") or {}
        length = config.get("max_position_embeddings")
        stated = [(length, "model config")] if isinstance(length, int) and length > 0 else []
    context, source = min(stated) if stated else (FALLBACK_CONTEXT, "assumed: set context in the row")
    if settings.max_context > 0 and settings.max_context < context:
        return settings.max_context, "MOE_CHAT_MAX_CONTEXT"
    return context, source


def _json(folder: Path | None, name: str) -> dict[str, Any] | None:
    if folder is None or not (folder / name).is_file():
        return None
    try:
        data = json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
