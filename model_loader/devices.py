"""What the machine offers (GPUs, their capability and memory, optional kernels), probed once."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    capability: tuple[int, int]  # CUDA compute capability, (8, 0) for an A100
    total_bytes: int


@dataclass(frozen=True)
class DeviceFacts:
    """Plain data, so every placement decision can be made (and tested) without a GPU."""

    gpus: tuple[Gpu, ...] = ()
    flash_attn_installed: bool = False  # flash-attn 2 importable and usable by transformers
    bitsandbytes_installed: bool = False

    @property
    def cuda_count(self) -> int:
        return len(self.gpus)


def probe_devices() -> DeviceFacts:
    """Read the facts from torch and the installed packages (imports torch)."""
    import torch

    gpus: tuple[Gpu, ...] = ()
    flash = False
    if torch.cuda.is_available():
        gpus = tuple(
            Gpu(i, torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i),
                torch.cuda.get_device_properties(i).total_memory)
            for i in range(torch.cuda.device_count())
        )
        from transformers.utils import is_flash_attn_2_available

        flash = bool(is_flash_attn_2_available())
    return DeviceFacts(gpus=gpus, flash_attn_installed=flash,
                       bitsandbytes_installed=importlib.util.find_spec("bitsandbytes") is not None)
