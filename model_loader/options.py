"""The load options a user can choose before a load (a value type and its choices; the planner decides the rest)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from common.errors import ModelLoadError

DTYPES = ("auto", "bfloat16", "float16", "float32")
QUANTIZATIONS = ("none", "8bit", "4bit")
ATTENTIONS = ("auto", "sdpa", "eager", "flash_attention_2")
EXPERTS = ("auto", "grouped_mm", "batched_mm", "eager")
OFFLOADS = ("none", "cpu", "disk")
Offload = Literal["none", "cpu", "disk"]


@dataclass(frozen=True)
class LoadOptions:
    """What the user chose in the sidebar's load options; every field has a safe automatic default."""

    dtype: str = "auto"  # auto: bf16 on GPU, the CPU dtype setting on CPU
    quantization: str = "none"  # 8bit / 4bit through bitsandbytes, GPU only
    attention: str = "auto"  # auto: flash_attention_2 where installed and every GPU is >= sm80, else sdpa
    experts: str = "auto"  # auto: transformers' choice (grouped_mm where it can run, else eager)
    gpus: tuple[int, ...] | None = None  # None: every visible GPU
    gpu_memory_gib: float | None = None  # cap per GPU for the weights; None: all free memory
    offload: Offload = "none"  # where layers may go when the GPUs are full; only if the user opts in

    def __post_init__(self) -> None:
        for name, allowed in (("dtype", DTYPES), ("quantization", QUANTIZATIONS), ("attention", ATTENTIONS),
                              ("experts", EXPERTS), ("offload", OFFLOADS)):
            if getattr(self, name) not in allowed:
                raise ModelLoadError(f"Load option {name}={getattr(self, name)!r} is not one of {allowed}.")
        if self.gpu_memory_gib is not None and self.gpu_memory_gib <= 0:
            raise ModelLoadError("Memory per GPU must be positive (GiB).")
