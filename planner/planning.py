"""Will it fit? The memory planner's public face: config + dtype + GPU sizes + context -> a frozen `MemoryPlan`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.units import human_bytes
from model_loader.registry import ModelSpec
from planner.configs import config_for_spec, read_config
from planner.device_map import loader_max_memory, simulate_device_map
from planner.facts import ModelFacts, PlanError
from planner.facts_cache import facts_cache_dir, model_facts
from planner.layout import GpuShare
from planner.memory_plan import DEFAULT_CONTEXT, DTYPES, MemoryPlan, plan_memory

__all__ = ["plan", "stored_dtype", "plan_memory", "model_facts", "config_for_spec", "read_config", "facts_cache_dir",
           "simulate_device_map", "loader_max_memory", "human_bytes", "DTYPES", "DEFAULT_CONTEXT", "PlanError",
           "MemoryPlan", "GpuShare", "ModelFacts"]


def plan(model: Mapping[str, Any] | ModelSpec, dtype: str = "bf16", gpu_bytes: Sequence[int] = (),
         context: int | None = None, cache_dir: Path | None = None) -> MemoryPlan:
    """The sidebar's entry point: a config dict or a registry row -> the plan (see `model_facts` for the cost).

    Pass `cache_dir=facts_cache_dir(settings)` to share counted facts with the CLI and across restarts.
    """
    config = config_for_spec(model) if isinstance(model, ModelSpec) else model
    return plan_memory(model_facts(config, cache_dir), stored_dtype(config) or dtype, gpu_bytes, context)


def stored_dtype(config: Mapping[str, Any]) -> str | None:
    """The dtype a checkpoint quantized ahead of time loads in, whatever is asked (GPTQ 4-bit: "int4", counted as
    nf4: GPTQ's fp16 scales per 128 weights come within 1% of it); None for an ordinary checkpoint."""
    quantized = config.get("quantization_config")
    if isinstance(quantized, Mapping) and quantized.get("quant_method") == "gptq":
        return {4: "int4", 8: "int8"}.get(quantized.get("bits"))
    return None
