"""Per-expert MoE blocks for quantized loads: one set of `nn.Linear`s per expert, the checkpoints' own layout.

transformers 5 fuses each layer's experts into 3-D tensors, and bitsandbytes (like every quantizer there) converts
only `nn.Linear`: in the fused layout the routed experts, 87-92% of the seeds' weights, would stay bf16. The classes
here are the library's own models with each layer's fused experts swapped for a list of per-expert MLPs, in the app's
namespace (nothing in transformers is patched, so a fused model loads the same way before and after). The router,
shared experts and block forward stay the model's own; a per-expert checkpoint loads with its keys as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeMLP, Qwen2MoeSparseMoeBlock

from model_loader.xverse.configuration_xverse import XverseConfig
from model_loader.xverse.modeling_xverse import XverseForCausalLM, XverseMLP, XverseSparseMoeBlock


class PerExpertExperts(nn.ModuleList):
    """The routed experts as a list of gated MLPs; same call as the fused experts, so the block is unchanged."""

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        """sum_k weight_k * expert_k(x) per token: [tokens, hidden], [tokens, k], [tokens, k] -> [tokens, hidden].

        The (token, slot) pairs are grouped by expert with one sort, so the host waits for the device once per layer
        (for the group sizes), not once per expert chosen.
        """
        final = torch.zeros_like(hidden_states)
        k = top_k_index.shape[-1]
        flat = top_k_index.reshape(-1)  # [tokens * k]
        order = flat.argsort(stable=True)  # [tokens * k]: pairs grouped by expert, in token order within one
        sizes = torch.bincount(flat, minlength=len(self)).tolist()  # [experts]
        start = 0
        for expert, size in enumerate(sizes):
            if size:  # only the experts some token chose
                pairs = order[start:start + size]  # [pairs]
                token_idx, top_k_pos = pairs // k, pairs % k  # [pairs], [pairs]
                current = self[expert](hidden_states[token_idx])  # [pairs, hidden]
                current = current * top_k_weights[token_idx, top_k_pos, None]
                final.index_add_(0, token_idx, current.to(final.dtype))
                start += size
        return final


# Linears the per-expert classes keep in the load dtype: quantizers convert only exactly `nn.Linear` (bitsandbytes
# and optimum's GPTQ alike), so these are a subclass. The planner leaves them unquantized too.
FULL_PRECISION_LINEARS = ("shared_expert_gate",)  # Qwen's one-row gate, 16-bit in quantized releases too


class FullPrecisionLinear(nn.Linear):
    """A Linear that quantizers leave alone (see FULL_PRECISION_LINEARS)."""


def _split_experts(model: nn.Module, block: type, make_expert: Callable[[], nn.Module]) -> None:
    """Replace the fused experts of every `block` in `model` with per-expert MLPs, and its FULL_PRECISION_LINEARS
    with FullPrecisionLinear (called inside __init__, so the new modules are built where from_pretrained builds)."""
    for module in model.modules():
        if isinstance(module, block):
            module.experts = PerExpertExperts(make_expert() for _ in range(model.config.num_experts))
            for name in FULL_PRECISION_LINEARS:
                if isinstance(old := getattr(module, name, None), nn.Linear):
                    setattr(module, name, FullPrecisionLinear(old.in_features, old.out_features,
                                                              bias=old.bias is not None))


class PerExpertQwen2MoeForCausalLM(Qwen2MoeForCausalLM):
    """Qwen2-MoE (Qwen1.5-MoE) with per-expert Linears: `mlp.experts.{e}.{gate,up,down}_proj.weight`."""

    def __init__(self, config: Qwen2MoeConfig) -> None:
        super().__init__(config)
        _split_experts(self, Qwen2MoeSparseMoeBlock, lambda: Qwen2MoeMLP(config, config.moe_intermediate_size))


class PerExpertXverseForCausalLM(XverseForCausalLM):
    """XVERSE-MoE with per-expert Linears, the original checkpoint's layout."""

    def __init__(self, config: XverseConfig) -> None:
        super().__init__(config)
        _split_experts(self, XverseSparseMoeBlock, lambda: XverseMLP(config, config.intermediate_size))


# model_type -> the per-expert class quantized loads use; a type not listed loads fused (its experts unquantized).
PER_EXPERT_CLASSES: dict[str, type] = {
    "qwen2_moe": PerExpertQwen2MoeForCausalLM,
    "xverse": PerExpertXverseForCausalLM,
}
