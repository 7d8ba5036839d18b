"""Counting a model's tensors: build it on the meta device (no memory, no weights) and record `ModelFacts`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from planner.facts import ModelFacts, ModuleInfo, PlanError, TensorInfo

EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
TOP_K_KEYS = ("num_experts_per_tok", "moe_top_k", "moe_k", "top_k")


def build_facts(config: Mapping[str, Any]) -> ModelFacts:
    """Count a config's tensors by building its model on the meta device (seconds: imports torch)."""
    import torch
    import transformers
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.quantizers.base import get_keys_to_not_convert
    from transformers.quantizers.quantizers_utils import should_convert_module

    from model_loader.per_expert import FULL_PRECISION_LINEARS, PER_EXPERT_CLASSES
    from model_loader.xverse import register

    register()
    model_type = config.get("model_type")
    try:
        hf_config = AutoConfig.for_model(**dict(config))
        with torch.device("meta"):  # shapes only: no memory, no weights
            model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)
    except Exception as exc:  # transformers raises many types for configs it cannot build; translated here
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise PlanError(f"transformers {transformers.__version__} cannot build a {model_type!r} model from this "
                        f"config ({type(exc).__name__}: {first}). Check the config, or choose a model type the "
                        "loader supports.") from None

    num_experts = _first_int(hf_config, EXPERT_KEYS)
    top_k = _first_int(hf_config, TOP_K_KEYS) if num_experts else 0
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied_keys = dict(getattr(model, "all_tied_weights_keys", {}) or {})
    fp32 = [re.compile(p.replace("*", ".*")) for p in model._get_dtype_plan(torch.bfloat16)]
    # What transformers' quantizers skip (the head), what the model keeps in float32, and what the per-expert class
    # keeps in full precision.
    kept = FULL_PRECISION_LINEARS if model_type in PER_EXPERT_CLASSES else ()
    not_quantized = get_keys_to_not_convert(model) + list(kept) + list(model._keep_in_fp32_modules or ())

    per_expert = model_type in PER_EXPERT_CLASSES  # quantized loads split its fused experts into Linears

    def tensor(full: str, local: str, t: torch.Tensor, module: nn.Module, module_name: str, buffer: bool):
        rows = t.numel() // int(t.shape[-1]) if t.dim() else 1
        if buffer:
            fixed = 0 if t.dtype == torch.bfloat16 else t.element_size()
            return TensorInfo(full, t.numel(), rows, "buffer", "buffer", fixed)
        if full in tied_keys:
            kind = "tied"
        elif any(p.search(full) for p in fp32):
            kind = "fp32"
        elif type(module) is nn.Linear and local == "weight" and should_convert_module(module_name, not_quantized):
            kind = "quantizable"
        else:
            kind = "param"
        group = _group(full, module, tuple(t.shape), num_experts, module is embed, module is head)
        if per_expert and group == "routed_experts" and t.dim() == 3 and kind == "param":
            # [E, 2I, H] gate_up: a gate and an up Linear per expert; [E, H, I] down: one
            return TensorInfo(full, t.numel(), rows, group, "quantizable", 0, t.shape[0] * (1 + ("gate_up" in local)))
        return TensorInfo(full, t.numel(), rows, group, kind)

    def node(name: str, module: nn.Module) -> ModuleInfo:
        prefix = f"{name}." if name else ""
        params = tuple(tensor(prefix + n, n, p, module, name, False) for n, p in module.named_parameters(recurse=False))
        buffers = tuple(tensor(prefix + n, n, b, module, name, True) for n, b in module.named_buffers(recurse=False))
        children = tuple(node(prefix + n, m) for n, m in module.named_children())
        return ModuleInfo(name, type(module).__name__, params, buffers, children)

    groups: dict[str, list[str]] = {}
    for k, v in tied_keys.items():
        groups.setdefault(v, [v]).append(k)
    heads = hf_config.num_attention_heads
    return ModelFacts(
        model_type=str(model_type), architecture=type(model).__name__,
        no_split=tuple(sorted(model._no_split_modules or ())), tied=tuple(tuple(sorted(g)) for g in groups.values()),
        num_layers=hf_config.num_hidden_layers, hidden_size=hf_config.hidden_size,
        kv_heads=getattr(hf_config, "num_key_value_heads", None) or heads,
        head_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads,
        max_position_embeddings=getattr(hf_config, "max_position_embeddings", None) or 0,
        num_experts=num_experts, experts_per_token=top_k, root=node("", model),
    )


def _first_int(config: Any, keys: tuple[str, ...]) -> int:
    return next((int(v) for k in keys if isinstance(v := getattr(config, k, None), int) and v > 0), 0)


_ATTENTION = re.compile(r"(^|\.)(self_attn|attn|attention)\.")
_PER_EXPERT = re.compile(r"\.experts\.\d+\.")


def _group(name: str, module: Any, shape: tuple[int, ...], experts: int, is_embed: bool, is_head: bool) -> str:
    """Which part of the model a parameter belongs to, by module identity, name and shape (first rule wins)."""
    last = name.rsplit(".", 2)[-2] if name.count(".") else ""
    fused = len(shape) == 3 and shape[0] == experts  # native v5 experts: [E, 2I, H] and [E, H, I]
    rules = (
        ("embedding", is_embed),
        ("lm_head", is_head),
        ("shared_experts", "shared_expert" in name),
        ("routed_experts", bool(experts) and (fused or bool(_PER_EXPERT.search(name)))),
        ("router", bool(experts) and (last in ("gate", "router") or "Router" in type(module).__name__)),
        ("norms", "Norm" in type(module).__name__),
        ("attention", bool(_ATTENTION.search(name))),
        ("dense_mlp", ".mlp." in name or "feed_forward" in name),
    )
    return next((group for group, hit in rules if hit), "other")
