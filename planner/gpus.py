"""The GPUs a plan is for: parsed from `--gpus`, or this machine's, without importing torch where there are none."""

from __future__ import annotations

import argparse
import re
from importlib.util import find_spec
from pathlib import Path
from shutil import which

NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the NVIDIA driver sees (Linux)
NVIDIA_DEVICE = Path("/dev/nvidia0")
ROCM_DEVICE = Path("/dev/kfd")  # AMD's ROCm builds of torch report their GPUs through torch.cuda too

_GPUS = re.compile(r"(?:(\d+)\s*[x*]\s*)?(\d+(?:\.\d+)?)\s*(gib|gb|mib|mb|g)?", re.IGNORECASE)
_UNITS = {"gib": 2**30, "g": 2**30, "gb": 10**9, "mib": 2**20, "mb": 10**6}


def parse_gpus(text: str) -> list[int]:
    """ "2x24GiB" -> [24 GiB, 24 GiB]; "24GiB,80GiB" -> two GPUs; a bare number means GiB."""
    sizes: list[int] = []
    for part in text.split(","):
        match = _GPUS.fullmatch(part.strip())
        if not match or float(match[2]) <= 0:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not a GPU list like 2x24GiB or 24GiB,80GiB")
        sizes += [int(float(match[2]) * _UNITS[(match[3] or "gib").lower()])] * int(match[1] or 1)
    return sizes


def might_have_gpus() -> bool:
    """Any sign of a GPU driver (files, nvidia-smi, NVML): only then is torch worth importing (seconds) to ask."""
    if NVIDIA_PROC.is_dir() and any(NVIDIA_PROC.iterdir()):
        return True
    if NVIDIA_DEVICE.exists() or ROCM_DEVICE.exists() or which("nvidia-smi"):
        return True
    if find_spec("pynvml") is None:  # nvidia-ml-py
        return False
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, or a broken one: NVML raises its own error types
        return False


def detected_gpus() -> list[int]:
    """Total bytes of each GPU this machine has (imports torch, but only where `might_have_gpus`)."""
    if not might_have_gpus():
        return []
    from model_loader.devices import probe_devices

    return [g.total_bytes for g in probe_devices().gpus]
