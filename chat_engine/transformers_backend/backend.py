"""The in-process backend: chat with a model loaded by transformers in this process."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from chat_engine.backends import IN_PROCESS
from chat_engine.budget import Budget, context_length, fit_to_context, token_counter
from chat_engine.interface import BackendInfo
from chat_engine.params import GenerationParams, model_defaults
from chat_engine.prompt import encode_prompt, render_prompt
from chat_engine.slots import SlotQueue
from chat_engine.transformers_backend.stream import InProcessGeneration, translate_error
from common.errors import ModelNotLoadedError, MoEChatError
from common.messages import Message
from common.settings import Settings
from model_loader.loader import LoadedModel
from model_loader.memory import free_cached_memory


def build_generation_config(base: Any, params: GenerationParams, tokenizer: Any) -> Any:
    """The model's own generation config with the user's parameters applied, free of conflicting flags."""
    cfg = copy.deepcopy(base)
    cfg.max_new_tokens = params.max_new_tokens
    cfg.max_length = None  # max_new_tokens alone bounds the answer
    cfg.do_sample = params.do_sample
    cfg.repetition_penalty = params.repetition_penalty
    cfg.min_new_tokens = params.max_new_tokens if params.ignore_eos else None
    if params.do_sample:
        cfg.temperature, cfg.top_p, cfg.top_k = params.temperature, params.top_p, params.top_k
    else:
        # Sampling knobs left set under greedy decoding make transformers warn on every request.
        cfg.temperature = cfg.top_p = cfg.top_k = None
    if cfg.eos_token_id is None:
        cfg.eos_token_id = tokenizer.eos_token_id
    if cfg.pad_token_id is None:
        cfg.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return cfg


class TransformersBackend:
    """Chat with a model loaded in this process; its generations wait in one first-come, first-served line."""

    capabilities = IN_PROCESS

    def __init__(self, loaded: LoadedModel, settings: Settings) -> None:
        self.loaded = loaded
        self.spec = loaded.spec
        self._settings = settings
        self.line = SlotQueue(max(1, settings.concurrency), settings.max_waiting_per_client)
        window = context_length(loaded.model.config, loaded.tokenizer)
        self.context = min(window, settings.max_context) if settings.max_context > 0 else window
        # The budget enforces the context; counting a long history must not make the tokenizer log a warning.
        loaded.tokenizer.model_max_length = int(1e30)
        self._count = token_counter(loaded.tokenizer) if getattr(loaded.tokenizer, "chat_template", None) else None

    def info(self) -> BackendInfo:
        loaded = self.loaded
        return BackendInfo(device_summary=loaded.device_summary, dtype=loaded.placement.dtype,
                           kernels=loaded.kernels, load_seconds=loaded.load_seconds, warnings=loaded.warnings)

    def budget(self, messages: Sequence[Message], max_new_tokens: int) -> Budget:
        if self._count is None:
            render_prompt(self._require_loaded().tokenizer, messages)  # raises the ChatTemplateError with its advice
        return fit_to_context(messages, self._count, self.context, max_new_tokens)

    def default_params(self) -> GenerationParams:
        loaded = self._require_loaded()
        return model_defaults(loaded.model.generation_config.to_dict(), loaded.spec.generation,
                              self._settings.max_new_tokens)

    def render_prompt(self, messages: Sequence[Message]) -> str:
        return render_prompt(self._require_loaded().tokenizer, messages)

    def generate(self, messages: Sequence[Message], params: GenerationParams, *,
                 routing: bool = False) -> InProcessGeneration:
        loaded = self._require_loaded()
        model, tokenizer = loaded.model, loaded.tokenizer
        budget = self.budget(messages, params.max_new_tokens)
        try:
            inputs = encode_prompt(tokenizer, budget.messages, device=model.get_input_embeddings().weight.device)
            config = build_generation_config(model.generation_config, params, tokenizer)
        except MoEChatError:
            raise
        except Exception as exc:  # e.g. a CUDA error moving the prompt: advice, not a traceback
            raise translate_error(exc) from exc
        return InProcessGeneration(model, tokenizer, inputs, config, budget=budget, seed=params.seed,
                                   record_routing=routing)

    def _require_loaded(self) -> LoadedModel:
        loaded = self.loaded
        if loaded is None:  # closed by a switch or unload in another session since this one looked
            raise ModelNotLoadedError("The model was unloaded a moment ago: load one in the sidebar.")
        return loaded

    def close(self) -> None:
        """Drop the weights and return their memory (the engine has stopped every reply first)."""
        self.loaded = None  # type: ignore[assignment]
        free_cached_memory()
