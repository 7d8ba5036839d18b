"""The app's own transformers-v5 XVERSE-MoE, registered with the Auto classes (the model's remote code needs v4)."""

from __future__ import annotations

import threading

_lock = threading.Lock()
_registered = False


def checkpoint_conversions() -> list:
    """Load-time merges of the original per-expert tensors into the fused experts (reversed on save)."""
    from transformers.core_model_loading import Concatenate, MergeModulelist, WeightConverter

    # The same operations as transformers' own "qwen2_moe" mapping: stack the experts, then gate rows above up rows.
    return [
        WeightConverter(
            source_patterns=["mlp.experts.*.gate_proj.weight", "mlp.experts.*.up_proj.weight"],
            target_patterns="mlp.experts.gate_up_proj",
            operations=[MergeModulelist(dim=0), Concatenate(dim=1)],
        ),
        WeightConverter(
            source_patterns="mlp.experts.*.down_proj.weight",
            target_patterns="mlp.experts.down_proj",
            operations=[MergeModulelist(dim=0)],
        ),
    ]


def register() -> None:
    """Make `AutoConfig` / `AutoModelForCausalLM` load model_type "xverse" with this package (safe to call again)."""
    global _registered
    with _lock:
        if _registered:
            return
        from transformers import AutoConfig, AutoModelForCausalLM
        from transformers.conversion_mapping import register_checkpoint_conversion_mapping

        from model_loader.xverse.configuration_xverse import XverseConfig
        from model_loader.xverse.modeling_xverse import XverseForCausalLM

        AutoConfig.register("xverse", XverseConfig, exist_ok=True)
        AutoModelForCausalLM.register(XverseConfig, XverseForCausalLM, exist_ok=True)
        register_checkpoint_conversion_mapping("xverse", checkpoint_conversions(), overwrite=True)
        _registered = True


__all__ = ["register"]
