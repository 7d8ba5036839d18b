"""One placement's consequences: what each GPU holds (weights, KV cache, working memory) and the longest context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planner.device_map import loader_max_memory, simulate_device_map
from planner.facts import ModelFacts, ModuleInfo, walk
from planner.sizes import (
    CUDA_CONTEXT_BYTES,
    activation_bytes_per_token,
    decoder_layers,
    kv_bytes_per_token,
    module_sizes,
)


@dataclass(frozen=True)
class GpuShare:
    """One GPU's part of the plan, at the planned context."""

    index: int
    total_bytes: int
    weight_cap_bytes: int  # the loader's max_memory for weights on this GPU
    weight_bytes: int  # resident weights placed here
    kv_bytes: int
    working_bytes: int  # activations + CUDA context (0 on an unused GPU)
    layers: tuple[int, ...]  # decoder layers placed here
    modules: tuple[str, ...]  # other modules placed here (embed_tokens, norm, lm_head, ...)

    @property
    def free_bytes(self) -> int:
        return self.total_bytes - self.weight_bytes - self.kv_bytes - self.working_bytes


@dataclass(frozen=True)
class Layout:
    """Where the loader would put the weights on these GPUs, and what that leaves for the context."""

    device_map: dict[str, int | str]
    gpus: tuple[GpuShare, ...]
    spilled_bytes: int
    spilled: tuple[str, ...]
    max_context: int

    def fits(self, context: int) -> bool:
        """Every weight on a GPU, with room for `context` tokens."""
        return bool(self.gpus) and not self.spilled_bytes and self.max_context >= context


def _device_of(name: str, device_map: Mapping[str, int | str]) -> int | str | None:
    keys = [k for k in device_map if k == "" or name == k or name.startswith(k + ".")]
    return device_map[max(keys, key=len)] if keys else None


def _landmarks(facts: ModelFacts, layers: set[str]) -> list[str]:
    """Modules outside the decoder layers that hold parameters (embed_tokens, norm, lm_head, ...)."""
    found: list[str] = []

    def visit(module: ModuleInfo) -> None:
        for child in module.children:
            if child.name in layers:
                continue
            if any(name.startswith(child.name + ".") for name in layers):
                visit(child)
            elif any(m.params for m in walk(child)):
                found.append(child.name)

    visit(facts.root)
    return found


def lay_out(facts: ModelFacts, dtype: str, gpu_bytes: Sequence[int], context: int) -> Layout:
    """The loader's placement of `facts` in `dtype` on GPUs of `gpu_bytes`, and each GPU's share at `context`."""
    if not gpu_bytes:
        return Layout({}, (), 0, (), 0)
    caps = loader_max_memory(gpu_bytes)
    device_map = simulate_device_map(facts, dtype, caps)
    resident, _ = module_sizes(facts, dtype, resident=True)
    layers = decoder_layers(facts)
    layer_dev = [_device_of(name, device_map) for name in layers]
    landmarks = [(n, _device_of(n, device_map)) for n in _landmarks(facts, set(layers))]
    act = activation_bytes_per_token(facts, dtype)
    shares, limits = [], []
    for i, total in enumerate(gpu_bytes):
        weights = int(sum(resident.get(k, 0) for k, d in device_map.items() if d == i))
        mine = tuple(j for j, d in enumerate(layer_dev) if d == i)
        kv_token = kv_bytes_per_token(facts, dtype, len(mine))
        used = any(d == i for d in device_map.values())
        shares.append(GpuShare(i, int(total), caps[i], weights, kv_token * context,
                               (CUDA_CONTEXT_BYTES + act * context) if used else 0, mine,
                               tuple(n.rsplit(".", 1)[-1] for n, d in landmarks if d == i)))
        if used:
            room = total - weights - CUDA_CONTEXT_BYTES
            limits.append(max(0, room // (kv_token + act)))
    off = {k: resident.get(k, 0) for k, d in device_map.items() if d in ("cpu", "disk") and resident.get(k, 0) > 0}
    longest = 0 if off or not limits else int(min(limits))
    if facts.max_position_embeddings:
        longest = min(longest, facts.max_position_embeddings)
    return Layout(device_map, tuple(shares), int(sum(off.values())), tuple(off), longest)


