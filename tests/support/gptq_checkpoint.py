"""A tiny Qwen2-MoE GPTQ-Int4 checkpoint packed here, in the layout of Qwen's official GPTQ-Int4 release.

Every Linear of the decoder layers (attention, each routed expert, the shared expert) becomes GPTQ v1 tensors:
4-bit round-to-nearest in groups of 128 along the input, symmetric (every zero point 8, stored as 7), fp16 scales,
identity g_idx; q/k/v keep their real bias, the bias-less layers get the all-zero `.bias` placeholder GPTQ tools
write. The one-row shared-expert gate, router, norms, embeddings and head stay fp16, as in the release.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

GROUP = 128
QUANTIZATION_CONFIG = {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "desc_act": False, "sym": True,
                       "damp_percent": 0.01, "true_sequential": True, "model_file_base_name": "model"}


def pack(weight):
    """[out, in] float weight -> (GPTQ v1 tensors, the weight they decode to)."""
    import torch

    out_f, in_f = weight.shape
    grouped = weight.float().T.reshape(in_f // GROUP, GROUP, out_f)  # [groups, 128, out]
    scale = (grouped.abs().amax(1) * 2 / 15).clamp(min=1e-8).half()  # [groups, out]
    q = torch.clamp(torch.round(grouped / scale.float()[:, None]) + 8, 0, 15).to(torch.int32)  # [groups, 128, out]
    decoded = ((q - 8) * scale.float()[:, None]).reshape(in_f, out_f).T  # [out, in]
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    qweight = (q.reshape(in_f // 8, 8, out_f) << shifts[None, :, None]).sum(1, dtype=torch.int32)  # [in/8, out]
    qzeros = (torch.full((in_f // GROUP, out_f // 8, 8), 7, dtype=torch.int32) << shifts).sum(2, dtype=torch.int32)
    g_idx = torch.arange(in_f, dtype=torch.int32) // GROUP
    return {"qweight": qweight, "qzeros": qzeros, "scales": scale, "g_idx": g_idx}, decoded


def build_tiny_qwen_gptq(source: Path, folder: Path, nonzero_placeholder: bool = False) -> dict:
    """Pack the per-expert checkpoint `source` (build_tiny_qwen_real_layout, 128-multiple sizes) into `folder`;
    return the decoded state dict (what the GPTQ layers compute with). `nonzero_placeholder` spoils one zero bias."""
    import torch
    from safetensors.torch import load_file, save_file
    from torch import nn
    from transformers import Qwen2MoeConfig

    from model_loader.per_expert import PerExpertQwen2MoeForCausalLM

    config = json.loads((source / "config.json").read_text())
    with torch.device("meta"):
        model = PerExpertQwen2MoeForCausalLM(Qwen2MoeConfig(**{k: v for k, v in config.items() if k != "torch_dtype"}))
    quantized = {n for n, m in model.named_modules() if type(m) is nn.Linear and n.startswith("model.layers.")}
    tensors: dict = {}
    for file in source.glob("*.safetensors"):
        tensors |= load_file(file)
    packed, decoded = {}, {}
    for key, t in tensors.items():
        module = key.rsplit(".", 1)[0]
        if module in quantized and key.endswith(".weight"):
            gptq, decoded[key] = pack(t)
            packed |= {f"{module}.{k}": v for k, v in gptq.items()}
            if f"{module}.bias" not in tensors:
                packed[f"{module}.bias"] = torch.zeros(t.shape[0], dtype=torch.float16)
        else:
            packed[key], decoded[key] = t.half(), t.half().float()
    if nonzero_placeholder:
        packed["model.layers.0.self_attn.o_proj.bias"][0] = 1.0
    folder.mkdir(parents=True)
    save_file(packed, folder / "model.safetensors", metadata={"format": "pt"})
    for name in source.iterdir():
        if name.suffix != ".safetensors" and name.name != "model.safetensors.index.json":
            shutil.copy(name, folder / name.name)
    (folder / "config.json").write_text(json.dumps(dict(config, torch_dtype="float16",
                                                        quantization_config=QUANTIZATION_CONFIG), indent=2))
    return decoded
