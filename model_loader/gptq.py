"""Checkpoints quantized ahead of time (GPTQ): what their config says, whether the backend is installed, and which
of their leftover tensors are harmless.

transformers 5 reads GPTQ through `optimum` and `gptqmodel` (the maintained GPTQ kernels, with a CPU one); both are
optional (requirements-gptq.txt). Loaded into the per-expert block, every expert gets its own GPTQ layer.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from common.errors import ModelLoadError

BACKEND = ("optimum", "gptqmodel")  # import names; pip names are the same


def gptq_label(config: Mapping[str, Any]) -> str:
    """E.g. "GPTQ 4-bit" for the config (config.json's content) of a GPTQ checkpoint; "" for any other."""
    quantized = config.get("quantization_config")
    if isinstance(quantized, Mapping) and quantized.get("quant_method") == "gptq":
        return f"GPTQ {quantized.get('bits', '?')}-bit"
    return ""


def require_backend(name: str) -> None:
    """Refuse, before anything is unloaded, a GPTQ checkpoint whose backend is missing."""
    missing = [m for m in BACKEND if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelLoadError(f"{name} is a GPTQ-quantized checkpoint; loading it needs {' and '.join(missing)}: "
                             "pip install -r requirements-gptq.txt (note: gptqmodel 7.6 pins numpy 2.2.6). Or load "
                             "the original checkpoint with Quantization 4-bit.")


def zero_placeholders(folder: Path, keys: Iterable[str]) -> set[str]:
    """Those of `keys` (checkpoint tensor names) whose tensors are all zeros: the `.bias` buffers some GPTQ tools
    write for layers that have no bias. Reads only those tensors."""
    import torch
    from safetensors import safe_open

    wanted = set(keys)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = {f for k, f in json.loads(index.read_text(encoding="utf-8"))["weight_map"].items() if k in wanted}
    else:
        files = {p.name for p in folder.glob("*.safetensors")}
    zeros = set()
    for name in sorted(files):
        with safe_open(str(folder / name), framework="pt") as f:
            for key in wanted.intersection(f.keys()):
                if not torch.count_nonzero(f.get_tensor(key)):
                    zeros.add(key)
    return zeros
