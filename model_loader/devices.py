"""Where and in which dtype a model loads: a pure decision from device facts, plus the probe for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model_loader.settings import Settings


@dataclass(frozen=True)
class DeviceFacts:
    """What the machine offers, as plain data so placement can be decided (and tested) without a GPU."""

    cuda_count: int = 0


@dataclass(frozen=True)
class Placement:
    """How `from_pretrained` should place the weights."""

    device: str  # "cuda" or "cpu"
    dtype: str  # torch dtype name
    device_map: str | None  # "auto" spreads layers over every visible GPU

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        import torch

        kwargs: dict[str, Any] = {"dtype": getattr(torch, self.dtype)}
        if self.device_map is not None:
            kwargs["device_map"] = self.device_map
        return kwargs


def plan_placement(facts: DeviceFacts, settings: Settings) -> Placement:
    """bf16 across all GPUs with device_map="auto" where CUDA exists, else the CPU dtype on the CPU."""
    use_cuda = facts.cuda_count > 0 and settings.device != "cpu"
    if settings.device == "cuda" and facts.cuda_count == 0:
        from model_loader.errors import ModelLoadError

        raise ModelLoadError("MOE_CHAT_DEVICE=cuda but no CUDA GPU is visible: check nvidia-smi or unset it.")
    if use_cuda:
        return Placement(device="cuda", dtype=settings.gpu_dtype, device_map="auto")
    return Placement(device="cpu", dtype=settings.cpu_dtype, device_map=None)


def probe_devices() -> DeviceFacts:
    """Count visible CUDA devices (imports torch)."""
    import torch

    return DeviceFacts(cuda_count=torch.cuda.device_count() if torch.cuda.is_available() else 0)
