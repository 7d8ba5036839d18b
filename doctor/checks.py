"""The doctor's judgements: machine facts in, one `Check` per line out (pure; the planner is pure too)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from common.units import gb, gib
from doctor.facts import MachineFacts
from model_loader.cuda_builds import short_version
from model_loader.disk import larger_disk_hint

MIN_PYTHON = (3, 11)  # streamlit 1.67's floor
FLASH_CAPABILITY = (8, 0)  # flash-attention 2: Ampere or newer


@dataclass(frozen=True)
class Check:
    status: str  # "ok" | "warn" | "fail"
    name: str
    text: str
    fix: str = ""

    def line(self, width: int = 11) -> str:
        return f"{self.status:<5} {self.name:<{width}} {self.text}" + (f" -> {self.fix}" if self.fix else "")


def run_checks(facts: MachineFacts) -> list[Check]:
    return [check for judge in JUDGES for check in judge(facts)]


def python_check(facts: MachineFacts) -> Iterator[Check]:
    shown = ".".join(map(str, facts.python))
    if facts.python[:2] >= MIN_PYTHON:
        yield Check("ok", "python", f"Python {shown}")
    else:
        yield Check("fail", "python", f"Python {shown}: streamlit 1.67 needs 3.11 or newer",
                    "conda create -n moe python=3.11 && conda activate moe, then install again")


def torch_check(facts: MachineFacts) -> Iterator[Check]:
    torch = facts.devices.torch
    if torch.version is None:
        yield Check("fail", "torch", "not installed",
                    "pip install -r requirements.txt (docs/gpus-and-memory.md: which torch)")
    elif torch.cuda is None:
        yield Check("ok", "torch", f"{torch.version}, a CPU-only build")
    else:
        yield Check("ok", "torch", f"{torch.version}, built for CUDA {torch.cuda}")


def driver_check(facts: MachineFacts) -> Iterator[Check]:
    driver = facts.devices.driver
    if not driver.present:
        yield Check("warn", "driver", "no NVIDIA driver (nvidia-smi, NVML, /proc/driver/nvidia): models run on the "
                    "CPU", "fine for the demo model; the seed models need NVIDIA GPUs")
        return
    if driver.error:
        yield Check("fail", "driver", driver.error, "restart the instance, or ask the provider to fix the driver")
        return
    cuda = f"{driver.cuda[0]}.{driver.cuda[1]}" if driver.cuda else "unknown"
    yield Check("ok", "driver", f"{driver.version or 'unknown version'}, runs CUDA up to {cuda}, "
                f"{len(driver.gpus)} GPU(s) (from {driver.source})")


def torch_gpus_check(facts: MachineFacts) -> Iterator[Check]:
    devices = facts.devices
    if not devices.driver.present or devices.driver.error:
        return
    problem = devices.cuda_problem
    if problem is None:
        yield Check("ok", "torch-gpus", f"torch uses all {devices.cuda_count} GPU(s) the driver shows")
        return
    usable = devices.cuda_count > 0  # e.g. CUDA_VISIBLE_DEVICES hides some on purpose
    yield Check("warn" if usable else "fail", "torch-gpus", problem.reason,
                problem.fix + (f": {problem.command}" if problem.command else ""))


def gpu_checks(facts: MachineFacts) -> Iterator[Check]:
    devices = facts.devices
    if devices.gpus:
        for gpu in devices.gpus:
            yield Check("ok", f"gpu {gpu.index}", f"{gpu.name}, {gib(gpu.total_bytes)}, compute capability "
                        f"{gpu.capability[0]}.{gpu.capability[1]}")
        return
    for gpu in devices.driver.gpus:  # what the driver shows, when torch cannot use it
        cap = f", compute capability {gpu.capability[0]}.{gpu.capability[1]}" if gpu.capability else ""
        size = f", {gib(gpu.total_bytes)}" if gpu.total_bytes else ""
        yield Check("warn", f"gpu {gpu.index}", f"{gpu.name}{size}{cap}, not usable by torch (see torch-gpus)")


def _capabilities(facts: MachineFacts) -> list[tuple[int, str, tuple[int, int] | None]]:
    if facts.devices.gpus:
        return [(g.index, g.name, g.capability) for g in facts.devices.gpus]
    return [(g.index, g.name, g.capability) for g in facts.devices.driver.gpus]


def flash_attn_check(facts: MachineFacts) -> Iterator[Check]:
    flash, torch = facts.flash_attn, facts.devices.torch
    if flash.version is None:
        yield Check("ok", "flash-attn", "not installed: attention runs on PyTorch's sdpa (optional; "
                    "docs/gpus-and-memory.md: flash-attn)")
        return
    old = [(i, name, cap) for i, name, cap in _capabilities(facts) if cap is not None and cap < FLASH_CAPABILITY]
    if old:
        i, name, cap = old[0]
        yield Check("warn", "flash-attn", f"{flash.version} installed, but flash-attention 2 needs compute capability "
                    f"8.0+ (Ampere) and GPU {i} ({name}) is {cap[0]}.{cap[1]}",
                    "the app uses sdpa on it; pip uninstall flash-attn removes the unused package")
    elif flash.error:
        py = ".".join(map(str, facts.python[:2]))
        yield Check("warn", "flash-attn", f"{flash.version} installed but does not import ({flash.error})",
                    f"install the wheel built for torch {short_version(torch.version or '?')}, CUDA "
                    f"{torch.cuda or '?'} and Python {py} (docs/gpus-and-memory.md: flash-attn), or pip uninstall "
                    "flash-attn; the app uses sdpa meanwhile")
    elif not facts.devices.gpus:
        yield Check("warn", "flash-attn", f"{flash.version} installed, unused: no GPU torch can use")
    else:
        yield Check("ok", "flash-attn", f"{flash.version}, imports, and every GPU is sm80 or newer: used by default")


def bitsandbytes_check(facts: MachineFacts) -> Iterator[Check]:
    bnb, has_gpu = facts.bitsandbytes, bool(facts.devices.gpus)
    if bnb.version is None:
        if has_gpu:
            yield Check("warn", "bitsandbytes", "not installed: no 8-bit / 4-bit loading",
                        "pip install -r requirements-gpu.txt --no-build-isolation")
        else:
            yield Check("ok", "bitsandbytes", "not installed (4-bit and 8-bit loading need a GPU anyway)")
    elif bnb.error:
        yield Check("warn", "bitsandbytes", f"{bnb.version} does not import ({bnb.error})",
                    "pip install -U -r requirements-gpu.txt")
    elif not has_gpu:
        yield Check("ok", "bitsandbytes", f"{bnb.version} installed (its CUDA kernels are used only with a GPU)")
    elif bnb.cuda:
        yield Check("ok", "bitsandbytes", f"{bnb.version}, CUDA kernels loaded: 8-bit and 4-bit loading work")
    else:
        yield Check("warn", "bitsandbytes", f"{bnb.version} has no CUDA kernels for this torch (CUDA "
                    f"{facts.devices.torch.cuda}): 4-bit loads would fail", "pip install -U bitsandbytes")


def disk_checks(facts: MachineFacts) -> Iterator[Check]:
    room = facts.disk
    yield Check("ok", "disk", f"{gb(room.free_bytes)} free of {gb(room.total_bytes)} at {facts.cache_dir} "
                f"({facts.cache_origin})")
    for item in facts.downloads:
        if item.done:
            yield Check("ok", "download", f"{item.name}: downloaded")
        elif room.fits(item.need_bytes):
            yield Check("ok", "download", f"{item.name}: {gb(item.need_bytes)}, fits")
        else:
            yield Check("warn", "download", f"{item.name}: {gb(item.need_bytes)}, does not fit in "
                        f"{gb(room.free_bytes)} free", larger_disk_hint())


def port_check(facts: MachineFacts) -> Iterator[Check]:
    port = facts.port
    if port.state == "free":
        yield Check("ok", "port", f"{port.number} is free for `streamlit run app.py`")
    elif port.state == "streamlit":
        yield Check("ok", "port", f"{port.number}: a Streamlit server already answers there (MoE Chat running?)")
    else:
        yield Check("fail", "port", f"{port.number} is taken by another program",
                    f"stop it (ss -ltnp 'sport = :{port.number}' names it), or run on another port with "
                    f"streamlit run app.py --server.port {port.number + 1} (AutoDL forwards only 6006)")


def fit_checks(facts: MachineFacts) -> Iterator[Check]:
    """The planner's verdicts for the GPUs torch uses, else the driver's (once torch can), else the CPU."""
    devices = facts.devices
    sizes = [g.total_bytes for g in devices.gpus] or [g.total_bytes for g in devices.driver.gpus if g.total_bytes]
    for spec in facts.specs:
        try:
            yield (_gpu_fit(spec, sizes, facts, later=not devices.gpus) if sizes else _cpu_fit(spec, facts))
        except Exception as exc:  # a row the planner cannot read: one line says so, the others still print
            yield Check("warn", "fit", f"{spec.name}: not planned ({str(exc).splitlines()[0][:160]})")


def _gpu_fit(spec: Any, sizes: list[int], facts: MachineFacts, later: bool) -> Check:
    from planner.machine_fit import fit

    plans = [fit(spec, sizes, facts.ram_bytes, dtype, "float32", None, facts.plan_cache) for dtype in ("bf16", "int4")]
    if plans[0].plan.dtype == plans[1].plan.dtype:  # stored quantized (GPTQ): planned the same either way
        plans = plans[:1]
    verdicts = ", ".join(f"{LABELS.get(p.plan.dtype, p.plan.dtype)} {p.plan.verdict}" for p in plans)
    target = f"{len(sizes)} x {gib(sizes[0])}" if len(set(sizes)) == 1 else " + ".join(map(gib, sizes))
    fits = any(p.fits for p in plans)
    return Check("ok" if fits else "warn", "fit",
                 f"{spec.name} on {target}{' (once torch can use them)' if later else ''}: {verdicts}",
                 "" if fits else f"python -m planner {spec.id} --gpus 4x24GiB shows what it needs")


def _cpu_fit(spec: Any, facts: MachineFacts) -> Check:
    from planner.machine_fit import fit

    verdict = fit(spec, [], facts.ram_bytes, "fp32", "float32", None, facts.plan_cache)
    plan = verdict.plan
    need = plan.weight_bytes + plan.kv_bytes + plan.working_bytes
    return Check("ok" if verdict.fits else "warn", "fit",
                 f"{spec.name} on the CPU ({gib(facts.ram_bytes)} RAM, float32): needs about {gib(need)}, "
                 f"{'fits' if verdict.fits else 'does not fit'}",
                 "" if verdict.fits else f"it needs GPUs: python -m planner {spec.id} --gpus 2x24GiB says how many")


LABELS = {"bf16": "bf16", "int4": "4-bit", "int8": "8-bit", "fp32": "fp32"}


JUDGES: tuple[Callable[[MachineFacts], Iterator[Check]], ...] = (
    python_check, torch_check, driver_check, torch_gpus_check, gpu_checks, flash_attn_check, bitsandbytes_check,
    disk_checks, port_check, fit_checks)
