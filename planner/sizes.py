"""Byte and parameter arithmetic on `ModelFacts`: tensor sizes per dtype, module sizes, counts, KV and activations."""

from __future__ import annotations

import re

from planner.facts import ModelFacts, ModuleInfo, TensorInfo, walk

COMPUTE_BYTES = {"bf16": 2, "fp32": 4, "int8": 2, "int4": 2}  # un-quantized weights, KV cache, activations
QUANT_BYTES = {"int8": 1, "int4": 0.5}  # per quantized weight, as transformers' bitsandbytes quantizers count
NF4_BLOCK = 64  # weights per 4-bit block, each with one scale (stored in 8 bits: nested quantization)
NF4_NESTED_BLOCK = 256  # 8-bit scales per float32 scale of the nested quantization
NF4_STATE_BYTES = 16 * 4 + 256 * 4 + 4  # per matrix: the nf4 code, the nested scales' 8-bit code, their offset
CUDA_CONTEXT_BYTES = 512 * 1024**2  # per GPU used: CUDA context + caching-allocator slack (an estimate)


def tensor_bytes(t: TensorInfo, dtype: str, resident: bool = True) -> float:
    """Bytes of one tensor loaded in `dtype`; resident=False counts as transformers does when it places layers."""
    b = COMPUTE_BYTES[dtype]
    if t.kind == "tied":
        return 0
    if t.kind == "buffer":
        return t.numel * (t.fixed_bytes or b)
    if t.kind == "quantizable" and dtype in QUANT_BYTES:
        extra = 0 if not resident else 4 * t.rows if dtype == "int8" else nf4_state_bytes(t.numel, t.pieces)
        return t.numel * QUANT_BYTES[dtype] + extra
    if t.kind == "fp32" and resident:  # float32 at load time (XVERSE's router), bf16 when transformers places it
        return t.numel * 4
    return t.numel * b


def nf4_state_bytes(numel: int, pieces: int = 1) -> int:
    """What bitsandbytes keeps beside `numel` nf4 weights split in `pieces` matrices: per block of 64 an 8-bit scale,
    per 256 of those a float32 scale, and per matrix its codes (measured on loaded models: tests/engine)."""
    per = -(-numel // pieces)
    blocks = -(-per // NF4_BLOCK)
    return pieces * (blocks + 4 * -(-blocks // NF4_NESTED_BLOCK) + NF4_STATE_BYTES)


def quantized_counts(facts: ModelFacts, dtype: str) -> tuple[int, int]:
    """(parameters stored quantized in `dtype`, their resident bytes with scales); (0, 0) for bf16 / fp32."""
    if dtype not in QUANT_BYTES:
        return 0, 0
    tensors = [t for m in walk(facts.root) for t in m.params if t.kind == "quantizable"]
    return sum(t.numel for t in tensors), int(sum(tensor_bytes(t, dtype) for t in tensors))


def module_sizes(facts: ModelFacts, dtype: str, resident: bool) -> tuple[dict[str, float], dict[str, float]]:
    """Bytes per module and per tensor name ("" = the model), and per module of its direct tensors."""
    sizes: dict[str, float] = {}
    leaves: dict[str, float] = {}
    for m in walk(facts.root):
        for t in m.params + m.buffers:
            if t.kind == "tied":
                continue
            size = tensor_bytes(t, dtype, resident)
            parts = t.name.split(".")
            for i in range(len(parts)):
                key = ".".join(parts[:i])
                sizes[key] = sizes.get(key, 0) + size
            sizes[t.name] = sizes.get(t.name, 0) + size
            if "." in t.name:
                parent = t.name.rsplit(".", 1)[0]
                leaves[parent] = leaves.get(parent, 0) + size
    return sizes, leaves


def param_counts(facts: ModelFacts) -> tuple[tuple[str, int, int], ...]:
    """(group, total, active per token) for each group of parameters, biggest first."""
    totals: dict[str, int] = {}
    for m in walk(facts.root):
        for t in m.params:
            if t.kind != "tied":
                totals[t.group] = totals.get(t.group, 0) + t.numel
    rows = [(g, n, n * facts.experts_per_token // facts.num_experts if g == "routed_experts" else n)
            for g, n in totals.items()]
    return tuple(sorted(rows, key=lambda r: -r[1]))


_LAYER_NAME = re.compile(r"\.(layers|h|blocks)\.\d+$")  # for a model that declares no `_no_split_modules`


def _layer_modules(facts: ModelFacts) -> list[ModuleInfo]:
    found = [m for m in walk(facts.root) if m.cls in facts.no_split]
    return found or [m for m in walk(facts.root) if _LAYER_NAME.search(m.name)]


def decoder_layers(facts: ModelFacts) -> tuple[str, ...]:
    """Names of the decoder layers (the no-split modules), in order."""
    return tuple(m.name for m in _layer_modules(facts))


def layer_active_params(facts: ModelFacts) -> int:
    """Active parameters of the largest decoder layer (for the activation allowance)."""
    best = 0
    for layer in _layer_modules(facts):
        tensors = [t for m in walk(layer) for t in m.params]
        routed = sum(t.numel for t in tensors if t.group == "routed_experts")
        rest = sum(t.numel for t in tensors if t.group != "routed_experts")
        best = max(best, rest + (routed * facts.experts_per_token // facts.num_experts if routed else 0))
    return best


def activation_bytes_per_token(facts: ModelFacts, dtype: str) -> int:
    """Working memory per context token on a GPU running decoder layers (see MemoryPlan)."""
    return COMPUTE_BYTES[dtype] * (2 * facts.hidden_size + layer_active_params(facts) // facts.hidden_size)


def kv_bytes_per_token(facts: ModelFacts, dtype: str, layers: int | None = None) -> int:
    """KV cache per token: 2 (K and V) x layers x kv_heads x head_dim x compute-dtype bytes."""
    n = facts.num_layers if layers is None else layers
    return 2 * n * facts.kv_heads * facts.head_dim * COMPUTE_BYTES[dtype]
