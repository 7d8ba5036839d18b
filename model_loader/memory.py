"""Memory readings for the sidebar panel: process and system RAM, and each CUDA device."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class GpuMemory:
    index: int
    name: str
    used_bytes: int  # by every process on the device
    total_bytes: int
    allocated_bytes: int  # by this process's tensors
    reserved_bytes: int  # by this process's caching allocator


@dataclass(frozen=True)
class MemorySnapshot:
    process_rss_bytes: int
    system_used_bytes: int
    system_total_bytes: int
    gpus: tuple[GpuMemory, ...] = ()


def _torch_cuda():
    # Only look at CUDA once torch is in use: importing it just to draw the panel costs seconds.
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda


def _gpu_readings() -> tuple[GpuMemory, ...]:
    cuda = _torch_cuda()
    if cuda is None:
        return ()
    gpus = []
    for i in range(cuda.device_count()):
        free, total = cuda.mem_get_info(i)
        gpus.append(GpuMemory(
            index=i, name=cuda.get_device_name(i), used_bytes=total - free, total_bytes=total,
            allocated_bytes=cuda.memory_allocated(i), reserved_bytes=cuda.memory_reserved(i),
        ))
    return tuple(gpus)


def snapshot() -> MemorySnapshot:
    """Read memory use now."""
    vm = psutil.virtual_memory()
    return MemorySnapshot(
        process_rss_bytes=psutil.Process(os.getpid()).memory_info().rss,
        system_used_bytes=vm.total - vm.available,
        system_total_bytes=vm.total,
        gpus=_gpu_readings(),
    )


def free_cached_memory() -> None:
    """Return freed memory to the system: Python garbage, then the CUDA caching allocator."""
    import gc

    gc.collect()
    cuda = _torch_cuda()
    if cuda is not None:
        cuda.empty_cache()
