"""Which experts each token used: the routers' top-k choices, recorded with forward hooks while `generate` runs.

Every MoE layer's router returns `(router_logits, top_k_weights, top_k_index)` (transformers' `Qwen2MoeTopKRouter`,
the app's `XverseRouter`). A hook on each router writes its `[tokens, k]` choices into a buffer preallocated on that
router's device; the host copies the new rows once per hand-over of streamed text (one copy per device, not one per
layer or per token, so a GPU is not synchronised 24 times a token). With recording off no hook is installed at all.

Row t of the record is token t as the model read it: the prompt's tokens (the first forward), then each answer token
when it was fed back in. The last answer token is never fed back, so an answer of n tokens has n - 1 routed rows.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from common.routing import Routing

ROUTER_CLASSES = ("Qwen2MoeTopKRouter", "XverseRouter")


def find_routers(model: Any) -> list[Any]:
    """The router of every MoE layer, in layer order."""
    return [m for _, m in model.named_modules() if type(m).__name__ in ROUTER_CLASSES]


@dataclass(frozen=True)
class RoutingTrace:
    """The recorded routing of one reply: experts `[tokens, layers, k]` and their weights, prompt rows first."""

    experts: Any  # torch.Tensor int16 [tokens, layers, k], on the CPU
    weights: Any  # torch.Tensor float32 [tokens, layers, k]
    prompt_tokens: int
    num_experts: int

    @property
    def layers(self) -> int:
        return int(self.experts.shape[1])

    @property
    def top_k(self) -> int:
        return int(self.experts.shape[2])


def shared_experts(config: Any) -> str:
    """The experts every token uses besides its routed ones, in words, from the model's config."""
    shared = getattr(config, "num_shared_experts", None)
    if shared:  # XVERSE-MoE: added with no gate
        return f"{shared} shared experts, ungated: every token uses them at full weight"
    if getattr(config, "shared_expert_intermediate_size", 0):  # Qwen2-MoE: one, scaled by a learned sigmoid gate
        return "1 shared expert, gated: every token uses it, scaled by a learned sigmoid gate"
    return "no shared experts"


def compact(trace: RoutingTrace, token_ids: Sequence[int], tokenizer: Any, shared: str) -> Routing:
    """The storable form of `trace`; `token_ids` are the ids of its rows (prompt, then answer but its last)."""
    tokens = [tokenizer.decode([i]) for i in token_ids[: trace.experts.shape[0]]]
    return Routing.pack(trace.experts.tolist(), trace.weights.tolist(), tokens, trace.prompt_tokens,
                        trace.num_experts, shared)


class RoutingRecorder:
    """Hooks on every router of `model`, writing into buffers for up to `capacity` tokens; `pull()` copies new rows
    to the host, `trace()` gives all of them, `close()` removes the hooks."""

    def __init__(self, model: Any, capacity: int) -> None:
        routers = find_routers(model)
        if not routers:
            raise ValueError(f"{type(model).__name__} has no router this app knows ({', '.join(ROUTER_CLASSES)})")
        self.num_experts = int(routers[0].num_experts)
        self.top_k = int(routers[0].top_k)
        self.capacity = capacity
        self._slots: list[tuple[int, int]] = []  # layer -> (device group, column in that group's buffer)
        groups: dict[torch.device, list[int]] = {}
        for layer, router in enumerate(routers):
            device = router.weight.device
            groups.setdefault(device, []).append(layer)
        self._buffers: list[tuple[torch.Tensor, torch.Tensor, list[int]]] = []
        slot_of: dict[int, tuple[int, int]] = {}
        for group, (device, layers) in enumerate(groups.items()):
            shape = (capacity, len(layers), self.top_k)
            self._buffers.append((torch.zeros(shape, dtype=torch.int16, device=device),
                                  torch.zeros(shape, dtype=torch.float32, device=device), layers))
            for column, layer in enumerate(layers):
                slot_of[layer] = (group, column)
        self._slots = [slot_of[layer] for layer in range(len(routers))]
        self._written = [0] * len(routers)
        self._owner = threading.get_ident()  # only this thread's forwards are recorded (others may share the model)
        self._pulled = 0
        self._host_experts: list[torch.Tensor] = []
        self._host_weights: list[torch.Tensor] = []
        self._handles = [router.register_forward_hook(self._hook(layer)) for layer, router in enumerate(routers)]

    @property
    def layers(self) -> int:
        return len(self._slots)

    def _hook(self, layer: int):
        group, column = self._slots[layer]
        ids_buffer, weights_buffer, _ = self._buffers[group]

        def hook(module: Any, args: Any, output: Any) -> None:
            if threading.get_ident() != self._owner:
                return
            _, weights, index = output  # [tokens, k] each; batch 1, so tokens are positions
            start = self._written[layer]
            end = min(start + index.shape[0], self.capacity)
            if end > start:
                ids_buffer[start:end, column] = index[: end - start].to(torch.int16)
                weights_buffer[start:end, column] = weights[: end - start].float()
            self._written[layer] = start + index.shape[0]

        return hook

    def pull(self) -> None:
        """Copy the rows every layer has written since the last pull to the host: one copy per device."""
        rows = min(min(self._written), self.capacity)
        if rows <= self._pulled:
            return
        experts = torch.empty((rows - self._pulled, self.layers, self.top_k), dtype=torch.int16)
        weights = torch.empty((rows - self._pulled, self.layers, self.top_k), dtype=torch.float32)
        for ids_buffer, weights_buffer, layers in self._buffers:
            experts[:, layers] = ids_buffer[self._pulled:rows].cpu()
            weights[:, layers] = weights_buffer[self._pulled:rows].cpu()
        self._host_experts.append(experts)
        self._host_weights.append(weights)
        self._pulled = rows

    def trace(self, prompt_tokens: int) -> RoutingTrace:
        self.pull()
        empty = torch.empty((0, self.layers, self.top_k))
        experts = torch.cat(self._host_experts) if self._host_experts else empty.to(torch.int16)
        weights = torch.cat(self._host_weights) if self._host_weights else empty.float()
        return RoutingTrace(experts, weights, prompt_tokens, self.num_experts)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
