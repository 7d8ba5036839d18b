"""Does this torch build run on this NVIDIA driver, and if not, which build to install: pure rules on plain facts."""

from __future__ import annotations

from dataclasses import dataclass

from model_loader.gpu_driver import DriverFacts, cuda_text, parse_version

INDEX = "https://download.pytorch.org/whl"
# The newest PyTorch release with a build for each CUDA line (pytorch.org "previous versions"), newest CUDA first:
# the build to install is the first whose CUDA the driver runs. torch 2.14.1 on PyPI itself is the CUDA 13.0 build.
BUILDS = (((13, 0), "2.14.1", "cu130"), ((12, 8), "2.9.1", "cu128"), ((12, 6), "2.9.1", "cu126"),
          ((12, 4), "2.6.0", "cu124"), ((11, 8), "2.7.1", "cu118"))
OLDEST_DRIVER = "520"  # CUDA 11.8's, the oldest any build above runs on


@dataclass(frozen=True)
class TorchFacts:
    version: str | None = None  # e.g. "2.14.1+cu130"; None: torch is not installed
    cuda: str | None = None  # the CUDA it was built for, e.g. "13.0"; None: a CPU-only (or ROCm) build
    visible: int | None = None  # GPUs torch can use; None: not asked (torch is imported only where a driver shows)
    error: str = ""  # torch's own words on why CUDA is unavailable


@dataclass(frozen=True)
class CudaProblem:
    """The driver shows GPUs that torch cannot use: why, and what to run."""

    reason: str  # e.g. "torch 2.14.1 is built for CUDA 13.0; this driver (550.54.14) supports up to CUDA 12.4"
    fix: str  # the advice in words
    command: str = ""  # the exact install command, when one helps

    def __str__(self) -> str:
        return f"{self.reason}. {self.fix}" + (f": {self.command}" if self.command else ".")


def matching_build(driver_cuda: tuple[int, int] | None) -> tuple[str, str, tuple[int, int]] | None:
    """(torch version, index tag, its CUDA) of the newest build this driver runs; None: none does."""
    if driver_cuda is None:
        return None
    return next(((version, tag, cuda) for cuda, version, tag in BUILDS if cuda <= driver_cuda), None)


def install_command(driver_cuda: tuple[int, int] | None) -> str:
    """The pip command for a torch build this driver runs ("" when none does)."""
    build = matching_build(driver_cuda)
    if build is None:
        return ""
    version, tag, _ = build
    return f"pip install torch=={version} --index-url {INDEX}/{tag}"


def short_version(version: str) -> str:
    return version.split("+")[0]


def cuda_problem(driver: DriverFacts, torch: TorchFacts, visible_env: str | None = None) -> CudaProblem | None:
    """None when torch uses every GPU the driver shows (or there is no driver); else the reason and the fix.
    `visible_env` is CUDA_VISIBLE_DEVICES as set (None: unset)."""
    if not driver.present:
        return None
    if driver.error:
        return CudaProblem(f"The NVIDIA driver does not answer ({driver.error})",
                           "Until nvidia-smi lists the GPUs no program can use them: restart the instance, or ask "
                           "the provider to fix the driver")
    shown = len(driver.gpus)
    if torch.version is None:
        return CudaProblem(f"torch is not installed; this driver shows {shown} GPU(s)",
                           "Install a torch build for this driver, then the requirements",
                           install_command(driver.cuda))
    if torch.visible is not None and torch.visible >= shown:
        return None
    version = short_version(torch.version)
    dc = cuda_text(driver.cuda)
    command = install_command(driver.cuda)
    no_build = (f"This driver ({driver.version}) is older than any torch build supports: update the NVIDIA driver to "
                f"{OLDEST_DRIVER} or newer, or rent a machine with a newer one")
    if torch.cuda is None:
        return CudaProblem(f"torch {version} is a CPU-only build; this driver shows {shown} GPU(s) and supports up "
                           f"to CUDA {dc}", "Install a CUDA build of torch" if command else no_build, command)
    built = tuple(parse_version(torch.cuda)[:2])
    if driver.cuda is not None and built > driver.cuda:
        return CudaProblem(f"torch {version} is built for CUDA {torch.cuda}; this driver ({driver.version}) supports "
                           f"up to CUDA {dc}",
                           "Install the torch build for this driver (or update the driver)" if command else no_build,
                           command)
    if torch.visible is None:  # not asked, and nothing else is known to be wrong
        return None
    if visible_env is not None and torch.visible:
        return CudaProblem(f"torch sees {torch.visible} of the {shown} GPUs the driver shows "
                           f"(CUDA_VISIBLE_DEVICES={visible_env})",
                           "Unset CUDA_VISIBLE_DEVICES to use them all, or ignore this if you meant it")
    said = f": {torch.error}" if torch.error else ""
    return CudaProblem(f"torch {version} (CUDA {torch.cuda}) sees {torch.visible or 0} of the {shown} GPUs the driver "
                       f"shows{said}",
                       "Check that CUDA_VISIBLE_DEVICES is unset and that no other CUDA installation shadows torch's "
                       "own (LD_LIBRARY_PATH); reinstalling the build for this driver often helps", command)
