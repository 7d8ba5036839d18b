"""Pure decisions about how a model loads: dtype, devices, memory caps, attention and experts kernels."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ModelLoadError
from common.settings import Settings
from model_loader.devices import DeviceFacts
from model_loader.options import LoadOptions, Offload
from model_loader.registry import ModelSpec


@dataclass(frozen=True)
class Placement:
    """How `from_pretrained` places the weights, and why (shown to the user)."""

    device: str  # "cuda" or "cpu"
    dtype: str
    device_map: str | None = None  # "auto" spreads layers over the GPUs in max_memory
    max_memory: dict[int | str, str] | None = None
    attention: str = "sdpa"
    attention_reason: str = ""
    experts: str | None = None  # None: transformers' default
    quantization: str = "none"
    offload: Offload = "none"
    offload_folder: Path | None = None
    notes: tuple[str, ...] = field(default=())

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `AutoModelForCausalLM.from_pretrained` (imports torch)."""
        import torch

        kwargs: dict[str, Any] = {"dtype": getattr(torch, self.dtype), "attn_implementation": self.attention}
        if self.experts is not None:
            kwargs["experts_implementation"] = self.experts
        if self.device_map is not None:
            kwargs["device_map"] = self.device_map
        if self.max_memory is not None:
            kwargs["max_memory"] = self.max_memory
        if self.offload_folder is not None:
            kwargs["offload_folder"] = str(self.offload_folder)
        if self.quantization != "none":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_8bit=self.quantization == "8bit",
                load_in_4bit=self.quantization == "4bit",
                bnb_4bit_quant_type="nf4",
                # The blocks' scales in 8 bits too: 4.13 instead of 4.5 bits per expert weight (QLoRA's nesting).
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=getattr(torch, self.dtype),
                llm_int8_enable_fp32_cpu_offload=self.offload == "cpu",
            )
            if self.device == "cpu":  # bitsandbytes would place the layers on a GPU wherever one is visible
                kwargs.setdefault("device_map", {"": "cpu"})
        return kwargs


def choose_attention(facts: DeviceFacts, gpus: tuple[int, ...], requested: str) -> tuple[str, str]:
    """The attention kernel and the reason, from the device facts alone."""
    capable = bool(gpus) and all(facts.gpus[i].capability >= (8, 0) for i in gpus)
    if requested == "flash_attention_2":
        if facts.flash_attn_error:
            raise ModelLoadError(f"flash-attention 2 was requested but flash-attn does not load "
                                 f"({facts.flash_attn_error}): install the wheel built for this torch, CUDA and "
                                 "Python (python -m doctor shows them), or choose sdpa.")
        if not facts.flash_attn_installed:
            raise ModelLoadError("flash-attention 2 was requested but flash-attn is not installed: "
                                 "pip install -r requirements-gpu.txt, or choose sdpa.")
        if not capable:
            raise ModelLoadError("flash-attention 2 needs GPUs of compute capability 8.0 or newer (Ampere); "
                                 "choose sdpa.")
        return requested, "chosen by you"
    if requested != "auto":
        return requested, "chosen by you"
    if not gpus:
        return "sdpa", "CPU: PyTorch's scaled-dot-product attention"
    if facts.flash_attn_error:
        return "sdpa", f"flash-attn is installed but does not load ({facts.flash_attn_error}): see python -m doctor"
    if not facts.flash_attn_installed:
        return "sdpa", "flash-attn is not installed (see requirements-gpu.txt)"
    if not capable:
        return "sdpa", "flash-attention 2 needs compute capability >= 8.0 on every GPU used"
    return "flash_attention_2", "flash-attn installed and every GPU used is sm80 or newer"


def plan_placement(facts: DeviceFacts, settings: Settings, options: LoadOptions | None = None,
                   offload_folder: Path | None = None) -> Placement:
    """Decide dtype, devices, memory caps and kernels; refuse impossible combinations with advice."""
    opts = options or LoadOptions()
    if settings.device == "cuda" and facts.cuda_count == 0:
        raise ModelLoadError("MOE_CHAT_DEVICE=cuda but no CUDA GPU is visible: check nvidia-smi or unset it.")
    use_cuda = facts.cuda_count > 0 and settings.device != "cpu"
    gpus = tuple(opts.gpus if opts.gpus is not None else range(facts.cuda_count)) if use_cuda else ()
    unknown = [i for i in gpus if i >= facts.cuda_count]
    if unknown:
        raise ModelLoadError(f"GPU {unknown[0]} is not visible (this machine has {facts.cuda_count}).")
    if use_cuda and not gpus:
        raise ModelLoadError("No GPU selected: pick at least one GPU in the load options.")
    if opts.quantization != "none" and not gpus:
        raise ModelLoadError("8-bit and 4-bit loading need a CUDA GPU; on CPU load in float32.")
    if opts.quantization != "none" and not facts.bitsandbytes_installed:
        raise ModelLoadError("8-bit / 4-bit loading needs bitsandbytes: pip install -r requirements-gpu.txt.")
    if opts.offload == "disk" and offload_folder is None:
        raise ModelLoadError("Disk offload needs a folder for the offloaded weights.")
    dtype = opts.dtype if opts.dtype != "auto" else (settings.gpu_dtype if gpus else settings.cpu_dtype)
    attention, why = choose_attention(facts, gpus, opts.attention)
    experts = None if opts.experts == "auto" else opts.experts
    if opts.quantization != "none" and experts is not None:
        raise ModelLoadError("The experts kernel applies to unquantized loads only (4-bit and 8-bit loads of "
                             "Qwen2-MoE and XVERSE-MoE run one quantized Linear per expert): set experts to auto.")
    if opts.quantization != "none" and opts.offload == "disk":
        raise ModelLoadError("bitsandbytes cannot offload quantized layers to disk: choose GPUs only or CPU "
                             "offload, or load unquantized.")
    if not gpus:
        return Placement(device="cpu", dtype=dtype, attention=attention, attention_reason=why, experts=experts)
    max_memory: dict[int | str, str] = {}
    for i in gpus:
        # By default leave a tenth of each GPU for the KV cache and activations.
        cap = opts.gpu_memory_gib if opts.gpu_memory_gib is not None else 0.9 * facts.gpus[i].total_bytes / 1024**3
        max_memory[i] = f"{cap:.2f}GiB"
    # Without an opt-in, the CPU gets no room, so a model that does not fit fails loudly instead of
    # silently crawling from system RAM.
    max_memory["cpu"] = "0GiB" if opts.offload == "none" else "1000GiB"
    return Placement(device="cuda", dtype=dtype, device_map="auto", max_memory=max_memory, attention=attention,
                     attention_reason=why, experts=experts, quantization=opts.quantization, offload=opts.offload,
                     offload_folder=offload_folder if opts.offload == "disk" else None)


def summarize_device_map(device_map: dict[str, Any] | None, fallback: str) -> str:
    """Where the modules went, e.g. "cuda:0 x 14, cuda:1 x 15"; `fallback` when there is no map."""
    if not device_map:
        return fallback
    counts = Counter(f"cuda:{d}" if isinstance(d, int) else str(d) for d in device_map.values())
    return ", ".join(f"{dev} x {n}" for dev, n in counts.items())


def offload_warning(device_map: dict[str, Any] | None) -> str | None:
    """A warning when any module landed off-GPU, else None."""
    if not device_map:
        return None
    off = sorted({str(d) for d in device_map.values() if d in ("cpu", "disk")})
    if not off:
        return None
    n = sum(1 for d in device_map.values() if d in ("cpu", "disk"))
    return (f"{n} module(s) run from {' and '.join(off)}, not GPU memory: answers will be much slower. "
            "Add a GPU, raise the memory per GPU, or load in 8-bit / 4-bit.")


def offload_folder(settings: Settings, spec: ModelSpec | None) -> Path:
    """Where layers offloaded to disk go for `spec` (used only when the user allows disk offload)."""
    name = spec.id.replace("/", "--").replace(":", "-") if spec else "model"
    return settings.cache_dir / "offload" / name
