"""How a `MemoryPlan` reads: the table a person takes in at a glance, and the stable JSON object (see plan.py)."""

from __future__ import annotations

from typing import Any

from planner.planning import MemoryPlan, human_bytes
from planner.sizes import CUDA_CONTEXT_BYTES

JSON_SCHEMA = 1
GROUP_NAMES = {"routed_experts": "routed experts", "shared_experts": "shared experts", "dense_mlp": "dense MLP"}


def human_params(n: int) -> str:
    """14315784192 -> "14.32 B"."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def layer_ranges(layers: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> "0-2, 5"."""
    runs: list[list[int]] = []
    for i in layers:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs)


def _holds(layers: tuple[int, ...], modules: tuple[str, ...]) -> str:
    first = [m for m in modules if m.startswith("embed")]
    parts = [*first, *([f"layers {layer_ranges(layers)}"] if layers else []), *(m for m in modules if m not in first)]
    return ", ".join(parts) or "nothing"


def _row(index: str, *cells: str) -> str:
    *sizes, holds = cells
    return f"  {index:>3}  " + "  ".join(f"{c:>10}" for c in sizes) + f"  {holds}"


def _compact(names: tuple[str, ...]) -> str:
    """("model.layers.23", "model.layers.24", "lm_head") -> "layers 23-24, lm_head"."""
    layers = tuple(int(n.rsplit(".", 1)[1]) for n in names if n.rsplit(".", 1)[-1].isdigit())
    return _holds(layers, tuple(n.rsplit(".", 1)[-1] for n in names if not n.rsplit(".", 1)[-1].isdigit()))


def _experts(plan: MemoryPlan) -> str:
    if not plan.num_experts:
        return "dense model"
    shared = " + shared experts" if any(g == "shared_experts" for g, _, _ in plan.params_by_group) else ""
    return f"{plan.experts_per_token} of {plan.num_experts} routed experts{shared}"


def format_table(plan: MemoryPlan, label: str) -> str:
    """The plan as a short report: the numbers, the per-GPU split, the verdict and what to do."""
    ctx = f"{plan.context:,} tokens"
    breakdown = ", ".join(
        f"{GROUP_NAMES.get(g, g)} {human_params(t)}" + (f" ({human_params(a)} active)" if a != t else "")
        for g, t, a in plan.params_by_group)
    lines = [
        f"Model            {label}  ({plan.model_type}, {plan.architecture})",
        f"Parameters       {human_params(plan.total_params)} total, {human_params(plan.active_params)} active per "
        f"token ({_experts(plan)})",
        f"  by part        {breakdown}",
        f"Weights          {human_bytes(plan.weight_bytes)} in {plan.dtype}{_quantized(plan)}",
        f"KV cache         {human_bytes(plan.kv_bytes_per_token)} per token; {human_bytes(plan.kv_bytes)} at {ctx}",
        f"Working memory   {human_bytes(plan.activation_bytes_per_token)} per token + {human_bytes(CUDA_CONTEXT_BYTES)}"
        f" CUDA context; {human_bytes(plan.working_bytes)} per GPU at {ctx}",
    ]
    if plan.gpus:
        sizes = {human_bytes(s.total_bytes) for s in plan.gpus}
        caps = {human_bytes(s.weight_cap_bytes) for s in plan.gpus}
        what = f"{len(plan.gpus)} x {sizes.pop()}" if len(sizes) == 1 else " + ".join(
            human_bytes(s.total_bytes) for s in plan.gpus)
        cap = f"{caps.pop()} each" if len(caps) == 1 else "90% of each"
        lines += [f"GPUs             {what} (the loader lets weights use {cap})", "",
                  _row("GPU", "size", "weights", "KV cache", "working", "free", "holds")]
        for s in plan.gpus:
            numbers = (s.total_bytes, s.weight_bytes, s.kv_bytes, s.working_bytes, s.free_bytes)
            lines.append(_row(str(s.index), *map(human_bytes, numbers), _holds(s.layers, s.modules)))
        spilled = (f"{human_bytes(plan.spilled_bytes)} would not fit on the GPUs: {_compact(plan.spilled_modules)}"
                   if plan.spilled_bytes else "nothing (every weight is on a GPU)")
        lines += [f"  cpu/disk: {spilled}", ""]
    else:
        lines += ["GPUs             none detected", ""]
    if not plan.gpus:
        longest = "-"
    elif plan.max_context == 0:
        longest = "0 tokens (the weights do not fit)"
    elif plan.max_context == plan.max_position_embeddings:
        longest = f"{plan.max_context:,} tokens (the model's window; memory is not the limit)"
    else:
        longest = f"{plan.max_context:,} tokens (limited by GPU memory)"
    rule = plan.rule_of_thumb_bytes
    rule_text = f"{rule / 1e9:.2f} GB ({human_bytes(rule)})" if rule >= 10**8 else human_bytes(rule)
    lines += [
        f"Longest context  {longest}",
        f"Verdict          {plan.verdict.upper()}",
        f"                 {plan.advice}",
        f"Rule of thumb    2 x 1.2 x P = {rule_text}: the seed tutorials' budget, for comparison",
    ]
    return "\n".join(lines)


def _quantized(plan: MemoryPlan) -> str:
    if not plan.quantized_params:
        return ""
    share = plan.quantized_params / plan.total_params
    bits = 8 * plan.quantized_bytes / plan.quantized_params
    return f": {human_params(plan.quantized_params)} weights ({share:.1%}) at {bits:.2f} bits with their scales"


def to_json(plan: MemoryPlan, label: str) -> dict[str, Any]:
    """The plan as the documented JSON object (field list in planner/cli.py)."""
    return {
        "schema": JSON_SCHEMA,
        "model": label,
        "model_type": plan.model_type,
        "architecture": plan.architecture,
        "dtype": plan.dtype,
        "context": plan.context,
        "params": {
            "total": plan.total_params,
            "active": plan.active_params,
            "by_group": {g: {"total": t, "active": a} for g, t, a in plan.params_by_group},
        },
        "experts": {"routed": plan.num_experts, "per_token": plan.experts_per_token},
        "weight_bytes": plan.weight_bytes,
        "quantized": {"params": plan.quantized_params, "bytes": plan.quantized_bytes},
        "kv_cache": {"bytes_per_token": plan.kv_bytes_per_token, "bytes_at_context": plan.kv_bytes},
        "working_memory": {"activation_bytes_per_token": plan.activation_bytes_per_token,
                           "cuda_context_bytes": CUDA_CONTEXT_BYTES, "bytes_per_gpu_at_context": plan.working_bytes},
        "gpus": [{"index": s.index, "total_bytes": s.total_bytes, "weight_cap_bytes": s.weight_cap_bytes,
                  "weight_bytes": s.weight_bytes, "kv_bytes": s.kv_bytes, "working_bytes": s.working_bytes,
                  "free_bytes": s.free_bytes, "layers": list(s.layers), "modules": list(s.modules)}
                 for s in plan.gpus],
        "spilled": {"bytes": plan.spilled_bytes, "modules": list(plan.spilled_modules)},
        "device_map": {name: device for name, device in plan.device_map},
        "max_context": plan.max_context,
        "max_position_embeddings": plan.max_position_embeddings,
        "verdict": plan.verdict,
        "gpus_needed": plan.gpus_needed,
        "advice": plan.advice,
        "rule_of_thumb_bytes": plan.rule_of_thumb_bytes,
    }
