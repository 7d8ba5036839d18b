"""What the NVIDIA driver shows, read without torch: nvidia-smi, else NVML, else /proc/driver/nvidia."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from shutil import which

PROC = Path("/proc/driver/nvidia")
SMI_QUERY = ("nvidia-smi", "--query-gpu=index,name,memory.total,compute_cap", "--format=csv,noheader,nounits")
SMI_TIMEOUT_S = 10.0

# The oldest Linux driver each CUDA release runs on (NVIDIA's CUDA Toolkit release notes, table 3), newest first:
# read when only the driver's version is known (/proc), to say which CUDA it supports.
MIN_DRIVER = (((13, 0), (580, 65, 6)), ((12, 9), (575, 51, 3)), ((12, 8), (570, 26)), ((12, 6), (560, 28, 3)),
              ((12, 5), (555, 42, 2)), ((12, 4), (550, 54, 14)), ((12, 3), (545, 23, 6)), ((12, 2), (535, 54, 3)),
              ((12, 1), (530, 30, 2)), ((12, 0), (525, 60, 13)), ((11, 8), (520, 61, 5)))


@dataclass(frozen=True)
class DriverGpu:
    index: int
    name: str
    total_bytes: int  # 0: unknown
    capability: tuple[int, int] | None = None  # CUDA compute capability; None: the source does not say


@dataclass(frozen=True)
class DriverFacts:
    """Plain data, so every judgement on it is tested without a driver."""

    version: str | None = None  # e.g. "550.54.14"; None: no NVIDIA driver found
    cuda: tuple[int, int] | None = None  # the newest CUDA the driver runs
    gpus: tuple[DriverGpu, ...] = ()
    source: str = ""  # where the facts came from: "nvidia-smi", "NVML" or "/proc/driver/nvidia"
    error: str = ""  # a driver that is present but answers with an error (e.g. nvidia-smi's own message)

    @property
    def present(self) -> bool:
        return self.version is not None or bool(self.gpus) or bool(self.error)


def cuda_text(cuda: tuple[int, int] | None) -> str:
    return "unknown" if cuda is None else f"{cuda[0]}.{cuda[1]}"


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


def cuda_for_driver(version: str) -> tuple[int, int] | None:
    """The newest CUDA a Linux driver of `version` runs (None: older than CUDA 11.8's driver)."""
    have = parse_version(version)
    return next((cuda for cuda, needed in MIN_DRIVER if have >= needed), None)


def parse_smi(query_csv: str, banner: str) -> DriverFacts:
    """`nvidia-smi --query-gpu=index,name,memory.total,compute_cap --format=csv,noheader,nounits` and the plain
    `nvidia-smi` banner (which alone names the driver's CUDA version)."""
    gpus = []
    for line in query_csv.strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        cap = re.fullmatch(r"(\d+)\.(\d+)", fields[3]) if len(fields) > 3 else None
        mib = re.match(r"\d+", fields[2])
        gpus.append(DriverGpu(int(fields[0]), fields[1], int(mib[0]) * 2**20 if mib else 0,
                              (int(cap[1]), int(cap[2])) if cap else None))
    version = re.search(r"Driver Version:\s*([\d.]+)", banner)
    cuda = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", banner)
    driver = version[1] if version else None
    runs = (int(cuda[1]), int(cuda[2])) if cuda else (cuda_for_driver(driver) if driver else None)
    return DriverFacts(version=driver, cuda=runs, gpus=tuple(gpus), source="nvidia-smi")


def parse_proc(version_text: str, informations: list[str]) -> DriverFacts:
    """/proc/driver/nvidia/version ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14 ...") and each
    /proc/driver/nvidia/gpus/*/information ("Model: NVIDIA GeForce RTX 4090")."""
    version = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", version_text)
    gpus = []
    for i, info in enumerate(informations):
        model = re.search(r"^Model:\s*(.+)$", info, re.MULTILINE)
        gpus.append(DriverGpu(i, model[1].strip() if model else "NVIDIA GPU", 0))
    return DriverFacts(version=version[1] if version else None,
                       cuda=cuda_for_driver(version[1]) if version else None, gpus=tuple(gpus),
                       source="/proc/driver/nvidia")


def probe_driver() -> DriverFacts:
    """The driver's facts from the first source that answers; an empty `DriverFacts` where there is none."""
    if which("nvidia-smi"):
        facts = _from_smi()
        if facts.gpus or facts.error:
            return facts
    facts = _from_nvml()
    if facts is not None:
        return facts
    if (PROC / "version").is_file():
        infos = [p.read_text(errors="replace") for p in sorted((PROC / "gpus").glob("*/information"))]
        return parse_proc((PROC / "version").read_text(errors="replace"), infos)
    return DriverFacts()


def _from_smi() -> DriverFacts:
    try:
        query = subprocess.run(SMI_QUERY, capture_output=True, text=True, timeout=SMI_TIMEOUT_S)
        banner = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=SMI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return DriverFacts(source="nvidia-smi", error=f"nvidia-smi did not answer: {exc}")
    if query.returncode != 0:  # e.g. "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"
        said = (query.stdout + query.stderr).strip().splitlines()
        return DriverFacts(source="nvidia-smi", error=said[0] if said else f"nvidia-smi exited {query.returncode}")
    return parse_smi(query.stdout, banner.stdout)


def _from_nvml() -> DriverFacts | None:
    try:
        import pynvml  # nvidia-ml-py, in requirements-gpu.txt
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: NVML raises its own error types
        return None
    try:
        version = pynvml.nvmlSystemGetDriverVersion()
        version = version.decode() if isinstance(version, bytes) else version
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()  # e.g. 12040
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(DriverGpu(i, name.decode() if isinstance(name, bytes) else name,
                                  int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                                  tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle))))
        return DriverFacts(version=version, cuda=(cuda // 1000, cuda % 1000 // 10), gpus=tuple(gpus), source="NVML")
    except Exception as exc:
        return DriverFacts(source="NVML", error=f"NVML answered with an error: {exc}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
