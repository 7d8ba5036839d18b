"""On a CUDA GPU: 4-bit loads as the app plans them (plan_placement, device_map="auto"), per-expert nf4 experts.

Skipped where no CUDA GPU is visible; `bash scripts/gpu_check.sh` runs these and bench/bench_quantized.py on cuda.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

from tests.engine.test_quantized import WIDE, expert_bytes, experts_errors, relative_error, spec_for
from tests.support.helpers import KNOWN_ANSWERS, build_tiny_qwen_real_layout
from tests.support.xverse_checkpoint import build_tiny_xverse

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gpu-quantized")
    return {"qwen": build_tiny_qwen_real_layout(root / "qwen", **WIDE["qwen"]),
            "xverse": build_tiny_xverse(root / "xverse", **WIDE["xverse"])}


def planned_load(folder, quantization: str):
    """What the Load button does on this machine: the planned placement, then the loader."""
    from common.settings import Settings
    from model_loader.devices import probe_devices
    from model_loader.loader import load_checkpoint
    from model_loader.placement import LoadOptions, plan_placement

    placement = plan_placement(probe_devices(), Settings(), LoadOptions(quantization=quantization))
    return load_checkpoint(spec_for(folder), folder, placement, tokenizer=None)


@pytest.mark.parametrize("name", ["qwen", "xverse"])
def test_nf4_on_cuda_shrinks_the_experts_and_follows_bf16(folders, name):
    import bitsandbytes as bnb

    nf4 = planned_load(folders[name], "4bit")
    bf16 = planned_load(folders[name], "none")
    assert nf4.per_expert and {p.device.type for p in nf4.model.parameters()} == {"cuda"}
    assert isinstance(nf4.model.model.layers[0].mlp.experts[0].down_proj, bnb.nn.Linear4bit)
    assert expert_bytes(bf16.model) / expert_bytes(nf4.model) >= 3.5
    assert max(experts_errors(bf16.model, nf4.model)) < 0.2  # 0.158-0.164 on the CPU
    with torch.no_grad():
        ids = torch.arange(5, 25).unsqueeze(0).to("cuda")
        got, want = nf4.model(ids).logits.float(), bf16.model(ids).logits.float()
    assert relative_error(got.cpu(), want.cpu()) < 0.25


def test_the_demo_answers_in_nf4_on_cuda(settings, registry):
    from chat_engine.engine import Engine
    from model_loader.placement import LoadOptions

    engine = Engine(dataclasses.replace(settings, device="auto"))
    try:
        engine.load(registry.get("demo-moe"), LoadOptions(quantization="4bit"))
        assert engine.backend.loaded.kernels.endswith("experts per-expert nf4 (bitsandbytes)")
        answers = {p: engine.chat([{"role": "user", "content": p}]).text() for p in KNOWN_ANSWERS}
        assert answers == KNOWN_ANSWERS
    finally:
        engine.close()
