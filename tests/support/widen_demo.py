"""Widen the bundled demo checkpoint to head_dim 32 without changing what it computes.

vLLM's CPU attention has no kernel for head_dim 24 (it takes 32, 64, ...), and vLLM's qwen2_moe derives
head_dim as hidden_size // num_attention_heads, so the demo model (hidden 96, 4 heads) cannot be served as is.
This writes an exact copy with hidden_size 128 (4 heads x 32):

* residual stream: 32 extra dims that stay exactly 0 (zero embed/lm_head columns, zero input columns in every
  layer that reads the stream, zero output rows in o_proj and down_proj);
* RMSNorm: those zeros make the mean square 0.75x, so norm weights are scaled by sqrt(0.75) and eps by 0.75;
* attention: in each head, rotary pair (j, j+12) moves to (j, j+16); rope_theta becomes 10000**(32/24) so the
  first 12 frequencies are unchanged; q is scaled by sqrt(32/24) so 1/sqrt(32) scores like 1/sqrt(24).

Usage: python tests/support/widen_demo.py SRC DST
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

OLD_HEAD, NEW_HEAD = 24, 32
COPIED = ("chat_template.jinja", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
READS_STREAM = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight", "up_proj.weight",
                "mlp.gate.weight", "shared_expert_gate.weight", "embed_tokens.weight", "lm_head.weight")
WRITES_STREAM = ("o_proj.weight", "down_proj.weight")


def head_dims(rotary: bool) -> torch.Tensor:
    """Where each of the 24 old head dims lands among the 32 new ones."""
    half = OLD_HEAD // 2
    if rotary:  # keep rotate_half pairs together: old j and j+12 become new j and j+16
        return torch.cat([torch.arange(half), torch.arange(half) + NEW_HEAD // 2])
    return torch.arange(OLD_HEAD)


def spread_heads(t: torch.Tensor, dim: int, rotary: bool) -> torch.Tensor:
    """Move axis `dim` (n_heads * 24 long) to n_heads * 32, zero where nothing lands."""
    n_heads = t.shape[dim] // OLD_HEAD
    places = torch.cat([h * NEW_HEAD + head_dims(rotary) for h in range(n_heads)])
    shape = list(t.shape)
    shape[dim] = n_heads * NEW_HEAD
    out = t.new_zeros(shape)
    out.index_copy_(dim, places, t)
    return out


def pad_stream(t: torch.Tensor, dim: int, extra: int) -> torch.Tensor:
    """Append `extra` zeros along axis `dim`."""
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def widen_tensor(name: str, t: torch.Tensor, extra: int, norm_scale: float) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return pad_stream(t * norm_scale, 0, extra)
    if name.endswith(READS_STREAM):
        t = pad_stream(t, 1, extra)
    if name.endswith(WRITES_STREAM):
        t = pad_stream(t, 0, extra)
    if ".self_attn." in name:
        if "q_proj" in name:
            t = t * math.sqrt(NEW_HEAD / OLD_HEAD)
        if "o_proj" in name:
            t = spread_heads(t, 1, rotary=False)
        else:
            t = spread_heads(t, 0, rotary="v_proj" not in name)
    return t


def widen_demo(src: Path, dst: Path) -> Path:
    """Write the head_dim-32 copy of the checkpoint at `src` into `dst`; return `dst`."""
    src, dst = Path(src), Path(dst)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    old_hidden, heads = config["hidden_size"], config["num_attention_heads"]
    assert old_hidden == heads * OLD_HEAD, f"expected head_dim {OLD_HEAD}, got {old_hidden // heads}"
    new_hidden = heads * NEW_HEAD
    ratio = old_hidden / new_hidden  # mean square of the widened stream is this times the old one

    dst.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    rope = config["rope_parameters"]
    assert rope.get("rope_type", "default") == "default", rope
    config.update(hidden_size=new_hidden, rms_norm_eps=config["rms_norm_eps"] * ratio,
                  rope_parameters={**rope, "rope_theta": rope["rope_theta"] ** (NEW_HEAD / OLD_HEAD)})
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    weights = load_file(src / "model.safetensors")
    extra, norm_scale = new_hidden - old_hidden, math.sqrt(ratio)
    widened = {name: widen_tensor(name, t, extra, norm_scale).contiguous() for name, t in weights.items()}
    save_file(widened, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/support/widen_demo.py SRC DST")
    print(widen_demo(Path(sys.argv[1]), Path(sys.argv[2])))
