"""What the doctor knows about a machine: plain data, so every check is tested with made-up machines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from model_loader.devices import DeviceFacts
from model_loader.disk import DiskRoom
from model_loader.registry import ModelSpec


@dataclass(frozen=True)
class Package:
    """An optional package: its version (None: not installed) and, where it was imported, what that showed."""

    version: str | None = None
    error: str = ""  # the import failed with this
    cuda: bool | None = None  # its CUDA kernels loaded; None: not asked (no usable GPU)


@dataclass(frozen=True)
class Port:
    number: int
    state: str  # "free" | "streamlit" (a Streamlit server answers there) | "taken"


@dataclass(frozen=True)
class Download:
    name: str
    need_bytes: int  # the checkpoint's size, as the planner counts its weights
    done: bool  # an earlier download finished


@dataclass(frozen=True)
class MachineFacts:
    python: tuple[int, int, int]
    devices: DeviceFacts  # the driver, torch and the GPUs torch can use
    flash_attn: Package
    bitsandbytes: Package
    cache_dir: Path
    cache_origin: str  # why downloads go there, in words
    disk: DiskRoom
    port: Port
    ram_bytes: int
    downloads: tuple[Download, ...] = ()
    specs: tuple[ModelSpec, ...] = ()  # the registry's in-process rows, for the will-it-fit lines
    plan_cache: Path | None = field(default=None)  # where the planner keeps counted facts
