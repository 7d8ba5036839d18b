"""Load a checkpoint folder into a model and tokenizer ready for chat."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ModelLoadError
from model_loader.checkpoint_check import read_config
from model_loader.gptq import gptq_label, require_backend, zero_placeholders
from model_loader.placement import Placement, offload_warning, summarize_device_map
from model_loader.registry import ModelSpec
from model_loader.weights_check import check_loaded_keys

log = logging.getLogger(__name__)
QUANT_LABELS = {"4bit": "nf4 (bitsandbytes)", "8bit": "int8 (bitsandbytes)"}


@dataclass
class LoadedModel:
    """A model in memory with everything generation needs. Owned by exactly one `Engine`."""

    spec: ModelSpec
    folder: Path
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers tokenizer
    placement: Placement
    load_seconds: float
    per_expert: str = ""  # how the experts are stored when one Linear per expert, e.g. "nf4 (bitsandbytes)"; "": fused

    @property
    def device_summary(self) -> str:
        """Where the layers went, e.g. "cuda:0 x 13, cuda:1 x 14" or "cpu"."""
        return summarize_device_map(getattr(self.model, "hf_device_map", None), str(self.model.device))

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the user must know about this placement (layers off-GPU)."""
        warning = offload_warning(getattr(self.model, "hf_device_map", None))
        found = (warning,) if warning else ()
        if self.placement.quantization != "none" and not self.per_expert and _has_fused_experts(self.model):
            found += (f"{self.spec.name}'s architecture has no per-expert block in this app: bitsandbytes quantized "
                      f"only its nn.Linear layers, and MoE experts stored fused stay in {self.placement.dtype}.",)
        return found

    @property
    def kernels(self) -> str:
        """Attention and experts implementations actually in use."""
        config = self.model.config
        attention = getattr(config, "_attn_implementation", None) or self.placement.attention
        if self.per_expert:
            return f"attention {attention}, experts per-expert {self.per_expert}"
        experts = getattr(config, "_experts_implementation", None)
        return f"attention {attention}" + (f", experts {experts}" if experts else "")


def load_tokenizer(spec: ModelSpec, folder: Path) -> Any:
    """The tokenizer of `folder`, with the row's chat template when the files carry none (cheap: done first)."""
    from transformers import AutoTokenizer

    from model_loader.xverse import register as register_architectures

    # AutoTokenizer reads config.json too: with the app's architectures unregistered it falls back to a generic
    # config, which mis-reads legacy keys such as `rope_scaling` (and warns about them on every load).
    register_architectures()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=spec.trust_remote_code)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelLoadError(f"The tokenizer of {spec.name} in {folder} failed to load ({type(exc).__name__}: "
                             f"{first}). Its tokenizer files (tokenizer.json, tokenizer_config.json, "
                             "tokenizer.model) are damaged or missing: delete them and press Load again to "
                             "fetch them again.") from exc
    if not getattr(tokenizer, "chat_template", None) and spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    return tokenizer


def load_checkpoint(spec: ModelSpec, folder: Path, placement: Placement, tokenizer: Any) -> LoadedModel:
    """Load the weights from `folder` beside `tokenizer` (from `load_tokenizer`); library errors become
    `ModelLoadError`."""
    from transformers import AutoModelForCausalLM

    from model_loader.xverse import register as register_architectures

    register_architectures()

    mend = placement.quantization == "4bit" and placement.device == "cpu"
    if mend:
        from model_loader.bnb_cpu import keep_tileable_cpu_kernels, mend_cpu_dequantize

        mend_cpu_dequantize()
    started = time.perf_counter()
    config = read_config(folder / "config.json")
    gptq = check_quantized_checkpoint(spec, config, placement)
    model_class = model_class_for(config, placement, gptq) or AutoModelForCausalLM
    try:
        model, info = model_class.from_pretrained(
            # Mismatched shapes come back in the loading info, so check_loaded_keys can name them.
            folder, trust_remote_code=spec.trust_remote_code, output_loading_info=True, ignore_mismatched_sizes=True,
            **placement.from_pretrained_kwargs()
        )
    except Exception as exc:
        raise _translate_load_error(spec, folder, placement, exc) from exc
    # GPTQ tools may write an all-zero `.bias` for each quantized layer that has none: harmless, so not refused.
    placeholders = zero_placeholders(folder, [k for k in info.get("unexpected_keys", ()) if k.endswith(".bias")]) \
        if gptq else set()
    check_loaded_keys(info, folder, spec.name, tied=getattr(model, "all_tied_weights_keys", {}) or {},
                      harmless=placeholders)
    model.eval()
    if mend:
        keep_tileable_cpu_kernels(model)
    elapsed = time.perf_counter() - started
    log.info("loaded %s from %s in %.1f s", spec.id, folder, elapsed)
    per_expert = ""
    if model_class is not AutoModelForCausalLM:
        per_expert = f"{gptq} ({_gptq_kernel(model)})" if gptq else QUANT_LABELS[placement.quantization]
    return LoadedModel(spec=spec, folder=folder, model=model, tokenizer=tokenizer, placement=placement,
                       load_seconds=elapsed, per_expert=per_expert)


def check_quantized_checkpoint(spec: ModelSpec, config: dict[str, Any], placement: Placement) -> str:
    """The GPTQ label (e.g. "GPTQ 4-bit") of a checkpoint with this config, else ""; a GPTQ checkpoint this load
    cannot read is refused (cheap: the loader calls it before any download or unload)."""
    gptq = gptq_label(config)
    if not gptq:
        return ""
    if placement.quantization != "none":
        raise ModelLoadError(f"{spec.name} is already quantized ({gptq}): set Quantization to none in the load "
                             "options.")
    require_backend(spec.name)
    return gptq


def model_class_for(config: dict[str, Any], placement: Placement, gptq: str = "") -> type | None:
    """The per-expert class of a quantized load (so bitsandbytes, or GPTQ, reaches the experts); None: Auto."""
    if placement.quantization == "none" and not gptq:
        return None
    from model_loader.per_expert import PER_EXPERT_CLASSES

    return PER_EXPERT_CLASSES.get(config.get("model_type", ""))


def _has_fused_experts(model: Any) -> bool:
    """Whether some MoE layer keeps its experts as fused 3-D tensors (which bitsandbytes leaves unquantized)."""
    return any(name.endswith(".experts") and any(p.dim() == 3 for p in m.parameters(recurse=False))
               for name, m in model.named_modules())


def _gptq_kernel(model: Any) -> str:
    """The GPTQ layer class gptqmodel chose for this device, e.g. "gptqmodel TorchAtenLinear"."""
    found = next((type(m) for m in model.modules() if hasattr(m, "qweight")), None)
    return f"gptqmodel {found.__name__}" if found is not None else "gptqmodel"


def _translate_load_error(spec: ModelSpec, folder: Path, placement: Placement, exc: Exception) -> ModelLoadError:
    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError":
        return ModelLoadError(f"{spec.name} does not fit in GPU memory. Add a GPU, load in 8-bit / 4-bit, "
                              "or allow CPU offload in the load options.")
    if placement.offload == "none" and "offload" in text.lower():
        return ModelLoadError(f"{spec.name} does not fit on the selected GPUs with the memory allowed. "
                              "Select more GPUs, raise the memory per GPU, load in 8-bit / 4-bit, or allow "
                              "CPU / disk offload in the load options (much slower).")
    return ModelLoadError(f"{spec.name} failed to load from {folder}: {type(exc).__name__}: {text}")
