"""GPTQ-Int4 checkpoints: loaded into the per-expert block through optimum + gptqmodel (in .venv-gptq, where
requirements-gptq.txt is installed), and refused with advice where the backend is missing."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from common.errors import ModelLoadError
from model_loader.loader import load_checkpoint
from model_loader.per_expert import PerExpertQwen2MoeForCausalLM
from model_loader.placement import Placement
from tests.engine.test_quantized import WIDE, spec_for
from tests.support.gptq_checkpoint import build_tiny_qwen_gptq
from tests.support.gptq_probe import PROMPT
from tests.support.helpers import ROOT, build_tiny_qwen_real_layout

# Read at import: the tests' environment drops MOE_CHAT_* variables. scripts/test.sh sets both.
GPTQ_VENV = Path(os.environ.get("MOE_CHAT_GPTQ_VENV", ROOT / ".venv-gptq"))
GPTQ_REQUIRED = os.environ.get("MOE_CHAT_REQUIRE_GPTQ") == "1"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """The tiny per-expert Qwen2-MoE, its GPTQ packing, and the logits its decoded weights give (the reference)."""
    root = tmp_path_factory.mktemp("gptq")
    source = build_tiny_qwen_real_layout(root / "source", **WIDE["qwen"])
    decoded = build_tiny_qwen_gptq(source, root / "gptq")
    model = PerExpertQwen2MoeForCausalLM.from_pretrained(source, dtype=torch.float32)
    with torch.no_grad():
        original = model(torch.tensor(PROMPT)).logits
        model.load_state_dict(decoded)
        reference = model(torch.tensor(PROMPT)).logits
    return {"root": root, "source": source, "gptq": root / "gptq", "reference": reference, "original": original}


def probe(folder: Path, out: Path) -> dict:
    """The app's loader run on `folder` by the GPTQ venv's Python."""
    python = GPTQ_VENV / "bin" / "python"
    if not python.exists():
        if GPTQ_REQUIRED:
            pytest.fail(f"{GPTQ_VENV} is missing: run `bash scripts/test.sh` (it installs requirements-gptq.txt)")
        pytest.skip("no GPTQ venv (bash scripts/test.sh makes .venv-gptq)")
    run = subprocess.run([str(python), "-m", "tests.support.gptq_probe", str(folder), str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.gptq
def test_a_gptq_checkpoint_loads_into_the_per_expert_block_and_follows_its_weights(tiny):
    report = probe(tiny["gptq"], tiny["root"] / "logits.pt")
    assert report.get("kernels") == "attention sdpa, experts per-expert GPTQ 4-bit (gptqmodel TorchAtenLinear)", report
    got = torch.load(tiny["root"] / "logits.pt")
    reference, original = tiny["reference"], tiny["original"]
    # fp16 GPTQ kernels against the decoded weights in float32: measured 0.006 where logits reach 1.3
    assert (got - reference).abs().max().item() < 0.02
    assert (got - original).abs().max().item() < 0.3 * original.abs().max().item()  # 4-bit rounding itself


@pytest.mark.gptq
def test_a_bias_the_gptq_layers_would_drop_is_refused(tiny):
    folder = tiny["root"] / "spoiled"
    build_tiny_qwen_gptq(tiny["source"], folder, nonzero_placeholder=True)
    report = probe(folder, tiny["root"] / "unused.pt")
    assert "1 tensor(s) of the checkpoint fit no weight of the model (model.layers.0.self_attn.o_proj.bias)" in \
        report.get("refused", ""), report
    assert "Answers would ignore part of the checkpoint" in report["refused"]


@pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is not None, reason="the GPTQ backend is installed here")
def test_without_its_backend_a_gptq_checkpoint_is_refused_before_the_current_model_is_freed(tiny, settings,
                                                                                            registry):
    from chat_engine.engine import Engine

    with pytest.raises(ModelLoadError, match=r"needs optimum and gptqmodel: pip install -r requirements-gptq.txt"):
        load_checkpoint(spec_for(tiny["gptq"]), tiny["gptq"], Placement(device="cpu", dtype="float32"), None)
    engine = Engine(settings)
    try:
        engine.load(registry.get("demo-moe"))
        with pytest.raises(ModelLoadError, match="GPTQ-quantized checkpoint"):
            engine.load(spec_for(tiny["gptq"]))
        assert engine.backend.loaded.spec.id == "demo-moe"  # still serving
        assert engine.chat([{"role": "user", "content": "Hello"}]).text()
    finally:
        engine.close()


@pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is not None, reason="the GPTQ backend is installed here")
def test_the_gptq_row_without_its_backend_is_refused_before_its_8_gb_download(settings, registry, _loopback_only):
    from chat_engine.engine import Engine

    engine = Engine(settings)
    try:
        with pytest.raises(ModelLoadError, match="pip install -r requirements-gptq.txt"):
            engine.load(registry.get("qwen1.5-moe-a2.7b-chat-gptq-int4"))
    finally:
        engine.close()
    assert _loopback_only == []  # not a single connection: no hub was asked for anything
    assert not list(settings.cache_dir.rglob("*.safetensors"))


def test_4bit_on_top_of_gptq_is_refused(tiny):
    with pytest.raises(ModelLoadError, match=r"already quantized \(GPTQ 4-bit\): set Quantization to none"):
        load_checkpoint(spec_for(tiny["gptq"]), tiny["gptq"],
                        Placement(device="cpu", dtype="float32", quantization="4bit"), None)
