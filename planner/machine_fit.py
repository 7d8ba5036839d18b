"""Will a model fit this machine (or the GPUs the user imagines)? A verdict for the sidebar, on top of the planner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.units import gib

CPU_DTYPE_FOR_PLAN = {"float32": "fp32", "bfloat16": "bf16", "float16": "bf16"}


@dataclass(frozen=True)
class MachineFit:
    """The planner's answer, judged against where the model would run."""

    plan: Any  # planner.planning.MemoryPlan
    fits: bool
    headline: str  # one line, e.g. "Does not fit this machine"
    detail: str  # the planner's advice or the RAM arithmetic
    target: str  # what was planned for, e.g. "2 x 24.0 GiB GPUs" or "CPU: 23.4 GiB RAM"


def judge_gpu_plan(plan: Any, gpu_bytes: Sequence[int]) -> MachineFit:
    """A GPU plan: fits when every weight has a GPU and the context fits."""
    fits = plan.verdict.startswith("fits")
    headline = {"fits": "Fits"}.get(plan.verdict, plan.verdict[:1].upper() + plan.verdict[1:])
    sizes = sorted(set(gpu_bytes))
    target = f"{len(gpu_bytes)} x {gib(sizes[0])} GPUs" if len(sizes) == 1 else \
        " + ".join(gib(b) for b in gpu_bytes) + " GPUs"
    return MachineFit(plan=plan, fits=fits, headline=headline, detail=plan.advice, target=target)


def judge_cpu_plan(plan: Any, ram_bytes: int, cpu_dtype: str) -> MachineFit:
    """No GPU: the weights, KV cache and activations must fit in system RAM (leaving the rest of the system room)."""
    need = plan.weight_bytes + plan.kv_bytes + plan.working_bytes
    room = int(ram_bytes * 0.8)
    target = f"CPU: {gib(ram_bytes)} RAM, no GPU"
    if need <= room:
        return MachineFit(plan, True, "Fits in RAM (CPU, slow for large models)",
                          f"Needs about {gib(need)} in {cpu_dtype} of {gib(ram_bytes)} RAM.", target)
    return MachineFit(plan, False, "Does not fit this machine",
                      f"Needs about {gib(need)} in {cpu_dtype}, this machine has {gib(ram_bytes)} of RAM and no "
                      "GPU. Plan for GPUs below (e.g. 2x24GiB) to see what to rent.", target)


def fit(spec: Any, gpu_bytes: Sequence[int], ram_bytes: int, dtype: str, cpu_dtype: str,
        context: int | None, cache_dir: Any) -> MachineFit:
    """Plan `spec` for the given GPUs, or for the CPU and its RAM when there are none."""
    from planner.planning import plan

    if gpu_bytes:
        return judge_gpu_plan(plan(spec, dtype, list(gpu_bytes), context, cache_dir=cache_dir), gpu_bytes)
    plan_dtype = CPU_DTYPE_FOR_PLAN.get(cpu_dtype, "fp32")
    return judge_cpu_plan(plan(spec, plan_dtype, (), context, cache_dir=cache_dir), ram_bytes, cpu_dtype)


def gpu_sizes(text: str) -> list[int]:
    """Sizes in bytes from text like "2x24GiB" or "24GiB,80GiB" (the CLI's --gpus syntax)."""
    import argparse

    from common.errors import MoEChatError
    from planner.gpus import parse_gpus

    try:
        return parse_gpus(text)
    except argparse.ArgumentTypeError as exc:
        raise MoEChatError(str(exc)) from None


def fit_for(spec: Any, settings: Any, machine_gpus: Sequence[int], dtype: str = "bf16",
            gpu_bytes: Sequence[int] | None = None, context: int | None = None) -> MachineFit:
    """Will `spec` fit this machine (its GPUs' sizes `machine_gpus`, or its RAM), or `gpu_bytes`, imaginary GPUs?"""
    from model_loader.memory import snapshot
    from planner.facts_cache import facts_cache_dir

    gpus = list(machine_gpus) if gpu_bytes is None else list(gpu_bytes)
    return fit(spec, gpus, snapshot().system_total_bytes, dtype, settings.cpu_dtype, context,
               facts_cache_dir(settings))
