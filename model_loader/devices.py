"""What the machine offers (GPUs, their capability and memory, optional kernels), probed once."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import one_line
from model_loader.cuda_builds import CudaProblem, TorchFacts, cuda_problem
from model_loader.gpu_driver import DriverFacts, probe_driver


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    capability: tuple[int, int]  # CUDA compute capability, (8, 0) for an A100
    total_bytes: int


@dataclass(frozen=True)
class DeviceFacts:
    """Plain data, so every placement decision can be made (and tested) without a GPU."""

    gpus: tuple[Gpu, ...] = ()  # the GPUs torch can use
    flash_attn_installed: bool = False  # flash-attn 2 importable and usable by transformers
    flash_attn_error: str = ""  # installed, but its CUDA extension does not load (a wheel for another torch/CUDA)
    bitsandbytes_installed: bool = False
    driver: DriverFacts = field(default_factory=DriverFacts)  # what the NVIDIA driver shows, torch or not
    torch: TorchFacts = field(default_factory=TorchFacts)
    visible_env: str | None = None  # CUDA_VISIBLE_DEVICES as set

    @property
    def cuda_count(self) -> int:
        return len(self.gpus)

    @property
    def cuda_problem(self) -> CudaProblem | None:
        """Why the driver's GPUs are not all usable, or None."""
        return cuda_problem(self.driver, self.torch, self.visible_env)


def torch_build() -> TorchFacts:
    """torch's version and the CUDA it was built for, read from its files without importing it (which takes
    seconds); `visible` is left unknown."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return TorchFacts()
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        text = (Path(spec.submodule_search_locations[0]) / "version.py").read_text()
    except OSError:
        return TorchFacts(version=version)
    return TorchFacts(version=version, cuda=cuda_of_version_py(text))


def cuda_of_version_py(text: str) -> str | None:
    """The `cuda = '13.0'` line of torch/version.py (None on CPU builds: `cuda: Optional[str] = None`)."""
    found = re.search(r"^cuda(?::[^=]*)?=\s*['\"]([\d.]+)['\"]", text, re.MULTILINE)
    return found[1] if found else None


def probe_torch() -> tuple[TorchFacts, tuple[Gpu, ...]]:
    """Ask torch itself which GPUs it can use (imports torch), keeping its words when it can use none."""
    import torch

    with warnings.catch_warnings(record=True) as caught:  # e.g. "The NVIDIA driver on your system is too old"
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    gpus: tuple[Gpu, ...] = ()
    if available:
        gpus = tuple(Gpu(i, torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i),
                         torch.cuda.get_device_properties(i).total_memory) for i in range(torch.cuda.device_count()))
    said = " ".join(str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip())
    facts = TorchFacts(version=torch.__version__, cuda=torch.version.cuda, visible=len(gpus), error=said[:300])
    return facts, gpus


def flash_attn_import_error() -> str:
    """"" when flash-attn's CUDA extension loads; else why not (an ABI mismatch shows only here, not in metadata)."""
    try:
        import flash_attn_2_cuda  # noqa: F401
    except Exception as exc:
        return one_line(exc)
    return ""


def probe_devices() -> DeviceFacts:
    """Read the facts from the driver, torch and the installed packages (imports torch)."""
    torch_facts, gpus = probe_torch()
    flash, flash_error = False, ""
    if gpus:
        from transformers.utils import is_flash_attn_2_available

        flash = bool(is_flash_attn_2_available())
        if flash:
            flash_error = flash_attn_import_error()
            flash = not flash_error
    return DeviceFacts(gpus=gpus, flash_attn_installed=flash, flash_attn_error=flash_error,
                       bitsandbytes_installed=importlib.util.find_spec("bitsandbytes") is not None,
                       driver=probe_driver(), torch=torch_facts, visible_env=os.environ.get("CUDA_VISIBLE_DEVICES"))
