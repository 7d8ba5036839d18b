"""Load a checkpoint folder into a model and tokenizer ready for chat."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_loader.devices import Placement
from model_loader.errors import ModelLoadError
from model_loader.registry import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model in memory with everything generation needs. Owned by exactly one `Engine`."""

    spec: ModelSpec
    folder: Path
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers tokenizer
    placement: Placement
    load_seconds: float

    @property
    def device_summary(self) -> str:
        """Where the layers went, e.g. "cuda:0 x 13, cuda:1 x 14" or "cpu"."""
        device_map = getattr(self.model, "hf_device_map", None)
        if not device_map:
            return str(self.model.device)
        counts = Counter(str(d) if not isinstance(d, int) else f"cuda:{d}" for d in device_map.values())
        return ", ".join(f"{dev} x {n}" for dev, n in counts.items())


def load_checkpoint(spec: ModelSpec, folder: Path, placement: Placement) -> LoadedModel:
    """Load weights and tokenizer from `folder`; library errors become `ModelLoadError`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=spec.trust_remote_code)
    except Exception as exc:
        raise ModelLoadError(f"The tokenizer of {spec.name} in {folder} failed to load: {exc}. "
                             "Re-download the model or check tokenizer.json.") from exc
    if not getattr(tokenizer, "chat_template", None) and spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, trust_remote_code=spec.trust_remote_code, **placement.from_pretrained_kwargs()
        )
    except Exception as exc:
        raise ModelLoadError(f"{spec.name} failed to load from {folder}: {exc}") from exc
    model.eval()
    elapsed = time.perf_counter() - started
    log.info("loaded %s from %s in %.1f s", spec.id, folder, elapsed)
    return LoadedModel(spec=spec, folder=folder, model=model, tokenizer=tokenizer, placement=placement,
                       load_seconds=elapsed)
