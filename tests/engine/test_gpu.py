"""On a CUDA GPU: the tiny Qwen2-MoE and XVERSE checkpoints in bf16 with device_map="auto", and the demo on cuda.

Skipped where no CUDA GPU is visible; `bash scripts/gpu_check.sh` runs these and the decode benchmark.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

from tests.support.helpers import KNOWN_ANSWERS, build_tiny_qwen_real_layout
from tests.support.xverse_checkpoint import build_tiny_xverse

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ATTENTION = ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])
PROMPT = [{"role": "user", "content": "What is a mixture of experts?"}]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    from model_loader.xverse import register

    register()
    return {"qwen": build_tiny_qwen_real_layout(tmp_path_factory.mktemp("gpu-qwen")),
            "xverse": build_tiny_xverse(tmp_path_factory.mktemp("gpu-xverse"))}


def load(folder, dtype: torch.dtype, **kwargs):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=False,
                                                       output_loading_info=True, **kwargs)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    return model.eval()


def greedy(model, ids: torch.Tensor, use_cache: bool) -> list[int]:
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False, use_cache=use_cache,
                             pad_token_id=model.config.pad_token_id or 0)
    return out[0].tolist()


@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("name", ["qwen", "xverse"])
def test_bf16_device_map_auto_loads_on_cuda_and_follows_float32(folders, name, attention):
    """bf16 across the visible GPUs gives the same next-token ranking as float32 on the CPU, up to bf16 noise."""
    folder = folders[name]
    model = load(folder, torch.bfloat16, device_map="auto", attn_implementation=attention)
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert model.config._attn_implementation == attention
    reference = load(folder, torch.float32)
    ids = torch.arange(5, 25).unsqueeze(0)
    with torch.no_grad():
        got = model(ids.to(model.device)).logits[0, -1].float().cpu()
        want = reference(ids).logits[0, -1]
    # the top choice of float32 stays among bf16's top 3: routing may flip on a near tie, the model may not break
    assert int(want.argmax()) in got.topk(3).indices.tolist()
    assert torch.corrcoef(torch.stack([got, want]))[0, 1] > 0.95


@pytest.mark.parametrize("name", ["qwen", "xverse"])
def test_cached_equals_uncached_on_cuda(folders, name):
    model = load(folders[name], torch.float32, device_map="auto")
    ids = torch.arange(5, 25).unsqueeze(0).to(model.device)
    assert greedy(model, ids, use_cache=True) == greedy(model, ids, use_cache=False)


@pytest.mark.parametrize("prompt", sorted(KNOWN_ANSWERS))
def test_demo_known_answers_on_cuda(settings, registry, prompt):
    """The engine's own path on cuda (float32, as the demo was trained) gives the demo's known answers."""
    from chat_engine.engine import Engine

    engine = Engine(dataclasses.replace(settings, device="cuda", gpu_dtype="float32"))
    try:
        engine.load(registry.get("demo-moe"))
        assert engine.backend.loaded.model.device.type == "cuda"
        assert engine.chat([{"role": "user", "content": prompt}]).text() == KNOWN_ANSWERS[prompt]
    finally:
        engine.close()


def test_the_real_driver_probe_agrees_with_torch_and_the_doctor_passes():
    """The probe's real sources on a real driver: nvidia-smi (or NVML, /proc) shows what torch sees."""
    import subprocess
    import sys

    from model_loader.devices import probe_devices
    from tests.support.helpers import ROOT

    facts = probe_devices()
    assert facts.driver.present and facts.driver.cuda is not None, facts.driver
    assert len(facts.driver.gpus) >= facts.cuda_count == torch.cuda.device_count()
    assert facts.torch.cuda == torch.version.cuda
    if not facts.visible_env:
        assert facts.cuda_problem is None, facts.cuda_problem
    done = subprocess.run([sys.executable, "-m", "doctor", "--port", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert "ok    torch-gpus" in done.stdout or facts.visible_env, done.stdout
    assert [line for line in done.stdout.splitlines() if line.startswith("ok    gpu 0")], done.stdout
