"""Quantized loads: per-expert MoE blocks that bitsandbytes really shrinks, on tiny checkpoints in the real layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from common.errors import ModelLoadError
from model_loader.loader import load_checkpoint
from model_loader.per_expert import PER_EXPERT_CLASSES, PerExpertExperts
from model_loader.placement import Placement
from model_loader.registry import ModelSpec
from model_loader.weight_bytes import expert_bytes, resident_bytes
from tests.support.helpers import build_tiny_qwen_real_layout
from tests.support.xverse_checkpoint import build_tiny_xverse

# Experts 256 wide: bitsandbytes keeps ~1.1 KB of codes per matrix, which would dominate a 32-wide toy's experts
# (Qwen1.5-MoE's are 2048 x 1408, where they are 0.07%).
WIDE = {"qwen": {"hidden_size": 256, "moe_intermediate_size": 256, "shared_expert_intermediate_size": 512,
                 "intermediate_size": 512},
        "xverse": {"hidden_size": 256, "intermediate_size": 256}}
PROMPT = torch.tensor([[5, 17, 42, 99, 123, 7, 250, 31, 64, 88, 140, 9, 200, 77, 13, 56, 180, 222, 3, 111]])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quantized")
    return {"qwen": build_tiny_qwen_real_layout(root / "qwen", **WIDE["qwen"]),
            "xverse": build_tiny_xverse(root / "xverse", **WIDE["xverse"])}


def spec_for(folder: Path) -> ModelSpec:
    return ModelSpec(id=folder.name, name=f"tiny {folder.name}", source="local", path=folder, kind="chat")


def load(folder: Path, dtype: str = "float32", quantization: str = "none"):
    return load_checkpoint(spec_for(folder), folder, Placement(device="cpu", dtype=dtype, quantization=quantization),
                           tokenizer=None)


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(PROMPT).logits.float()  # [1, 20, vocab]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want||, with logits centred per position (a shift of all logits changes nothing)."""
    centred = want - want.mean(-1, keepdim=True)
    return ((got - got.mean(-1, keepdim=True)) - centred).norm().item() / centred.norm().item()


def experts_errors(fused, quantized) -> list[float]:
    """Per layer: the quantized experts' output against the full-precision experts' on the same 64 random tokens
    and routing (every expert gets tokens), as a relative error."""
    torch.manual_seed(0)
    errors = []
    for want_layer, got_layer in zip(fused.model.layers, quantized.model.layers, strict=True):
        want, got = want_layer.mlp.experts, got_layer.mlp.experts
        k = getattr(fused.config, "num_experts_per_tok", None) or fused.config.moe_top_k  # Qwen's name, XVERSE's
        first = next(want.parameters())
        x = torch.randn(64, fused.config.hidden_size).to(first.device, first.dtype)  # [tokens, hidden]
        index = torch.stack([torch.randperm(want.num_experts)[:k] for _ in range(64)]).to(first.device)  # [tokens, k]
        weights = torch.softmax(torch.randn(64, k), -1).to(first.device, first.dtype)  # [tokens, k]
        with torch.no_grad():
            reference = want(x, index, weights).float()
            errors.append((got(x, index, weights).float() - reference).norm().item() / reference.norm().item())
    return errors


@pytest.mark.parametrize("name", ["qwen", "xverse"])
def test_per_expert_block_equals_the_fused_model_in_fp32(checkpoints, name):
    folder = checkpoints[name]
    fused = load(folder)
    model_type = json.loads((folder / "config.json").read_text())["model_type"]
    per_expert, info = PER_EXPERT_CLASSES[model_type].from_pretrained(folder, dtype=torch.float32,
                                                                      output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))  # checkpoint keys as-is
    experts = per_expert.model.layers[0].mlp.experts
    assert isinstance(experts, PerExpertExperts) and type(experts[0].gate_proj) is torch.nn.Linear
    assert per_expert.model.layers[0].mlp.experts[0].gate_proj.weight.shape == (WIDE[name].get(
        "moe_intermediate_size", WIDE[name]["intermediate_size"]), 256)
    assert (logits(per_expert) - logits(fused.model)).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", ["qwen", "xverse"])
def test_nf4_experts_shrink_3_5x_and_the_router_stays_full_precision(checkpoints, name):
    import bitsandbytes as bnb

    folder = checkpoints[name]
    bf16 = load(folder, "bfloat16")
    nf4 = load(folder, "float32", "4bit")
    assert nf4.per_expert and nf4.kernels.endswith("experts per-expert nf4 (bitsandbytes)")
    block = nf4.model.model.layers[1].mlp
    assert all(isinstance(getattr(e, p), bnb.nn.Linear4bit) for e in block.experts
               for p in ("gate_proj", "up_proj", "down_proj"))
    router = block.gate if name == "qwen" else block.router
    assert router.weight.dtype == torch.float32 and not isinstance(router.weight, bnb.nn.Params4bit)
    if name == "qwen":
        gate = block.shared_expert_gate  # one row: kept as it is
        assert not isinstance(gate, bnb.nn.Linear4bit) and gate.weight.dtype == torch.float32
    ratio = expert_bytes(bf16.model) / expert_bytes(nf4.model)
    assert ratio >= 3.5, f"nf4 experts take 1/{ratio:.2f} of bf16"
    full = load(folder)
    # nf4's rounding of Gaussian weights, through gate, up and down: measured 0.158-0.164 in every layer of both
    # models (8-bit: 0.02; wrong weights or a wrong expert: ~1).
    assert max(experts_errors(full.model, nf4.model)) < 0.2
    assert relative_error(logits(nf4.model), logits(full.model)) < 0.25  # measured 0.16 (Qwen), 0.18 (XVERSE)


@pytest.mark.parametrize("name", ["qwen", "xverse"])
def test_8bit_experts_halve_and_stay_close(checkpoints, name):
    folder = checkpoints[name]
    int8 = load(folder, "float32", "8bit")
    assert int8.kernels.endswith("experts per-expert int8 (bitsandbytes)")
    logits(int8.model)  # after a forward bitsandbytes moves the row scales to the layer: still counted
    assert expert_bytes(load(folder, "bfloat16").model) / expert_bytes(int8.model) > 1.95
    full = load(folder)
    assert max(experts_errors(full.model, int8.model)) < 0.03  # measured 0.020-0.022
    assert relative_error(logits(int8.model), logits(full.model)) < 0.05  # measured 0.016 (Qwen), 0.030 (XVERSE)


@pytest.mark.parametrize("name", ["qwen", "xverse"])
def test_the_planner_counts_the_loaded_nf4_bytes(checkpoints, name):
    """The planner's int4 weight bytes for a config equal what bitsandbytes keeps for it on the CPU, byte for byte
    (XVERSE's float32 routers included; a GPU's caching allocator rounds each tensor up to 512 bytes)."""
    from planner.planning import model_facts, plan_memory

    folder = checkpoints[name]
    config = json.loads((folder / "config.json").read_text())
    planned = plan_memory(model_facts(config), "int4").weight_bytes
    measured = resident_bytes(load(folder, "bfloat16", "4bit").model)
    assert planned == measured


@pytest.mark.slow
def test_the_demo_keeps_its_known_answers_in_nf4(settings, registry):
    """The 0.7M-parameter demo in nf4: every known answer and the fallback survive (pinned: all 6 + fallback)."""
    from chat_engine.engine import Engine
    from chat_engine.transformers_backend.loader import TransformersLoader
    from tests.support.helpers import DEMO_DIR, FALLBACK, KNOWN_ANSWERS

    full = load(DEMO_DIR)
    dialogue = [{"role": "user", "content": "Who are you?"},
                {"role": "assistant", "content": KNOWN_ANSWERS["Who are you?"]}]
    # The real loader, with the placement the app plans only on CUDA (bitsandbytes' CPU path stands in for it).
    nf4_on_cpu = Placement(device="cpu", dtype="float32", quantization="4bit")
    engine = Engine(settings, loader=lambda name, s: TransformersLoader(s, placement=nf4_on_cpu))
    try:
        engine.load(registry.get("demo-moe"))
        loaded = engine.backend.loaded
        assert loaded.per_expert
        ids = loaded.tokenizer.apply_chat_template(dialogue, return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            reference, nf4 = full.model(ids).logits, loaded.model(ids).logits  # [1, tokens, vocab]
        error = (nf4 - reference).abs()
        agreement = (nf4.argmax(-1) == reference.argmax(-1)).float().mean().item()
        print(f"demo nf4 logits: max error {error.max():.3f}, mean {error.mean():.3f}, logits up to "
              f"{reference.abs().max():.2f}, top-1 agreement {agreement:.3f} over {ids.shape[1]} positions")
        # measured: max 5.14, mean 0.156 (|logits| up to 12.45), top-1 agreement 0.896 over 48 positions
        assert error.mean().item() < 0.1 * reference.abs().mean().item() and agreement >= 0.85
        answers = {p: engine.chat([{"role": "user", "content": p}]).text() for p in KNOWN_ANSWERS}
        assert answers == KNOWN_ANSWERS
        assert engine.chat([{"role": "user", "content": FALLBACK["prompts"][0]}]).text() == FALLBACK["answer"]
        reply = engine.chat([{"role": "user", "content": "Hello"}], routing=True)  # the experts view works too
        assert reply.text() == KNOWN_ANSWERS["Hello"] and reply.generation.routing_trace.experts.shape[1:] == (2, 2)
    finally:
        engine.close()


# --- loads that would chat with random weights are refused ----------------------------------------------------------

def copy_with(src: Path, dst: Path, edit) -> Path:
    """A copy of the safetensors checkpoint `src` with `edit` applied to its tensors."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    for file in dst.glob("*.safetensors"):
        save_file(edit(load_file(file)), file, metadata={"format": "pt"})
    return dst


def without_expert_2_of_layer_1(tensors: dict) -> dict:
    return {k: v for k, v in tensors.items() if ".layers.1.mlp.experts.2." not in k}


def as_gptq(tensors: dict) -> dict:
    """The routed experts as GPTQ-Int4 tensors (qweight / qzeros / scales / g_idx), the official checkpoint's names."""
    out = {}
    for key, t in tensors.items():
        if ".mlp.experts." in key and key.endswith(".weight"):
            base, (rows, cols) = key.removesuffix(".weight"), t.shape
            out |= {f"{base}.qweight": torch.zeros(cols // 8, rows, dtype=torch.int32),
                    f"{base}.qzeros": torch.zeros(cols // 128, rows // 8, dtype=torch.int32),
                    f"{base}.scales": torch.ones(cols // 128, rows, dtype=torch.float16),
                    f"{base}.g_idx": torch.arange(cols, dtype=torch.int32) // 128}
        else:
            out[key] = t
    return out


def refusal(source: Path, folder: Path, edit, quantization: str) -> str:
    """The error of loading a copy of `source` spoiled by `edit`."""
    with pytest.raises(ModelLoadError) as refused:
        load(copy_with(source, folder, edit), "float32", quantization)
    return str(refused.value)


@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_a_load_with_an_expert_missing_is_refused_with_its_names(checkpoints, tmp_path, quantization):
    text = refusal(checkpoints["qwen"], tmp_path / "broken", without_expert_2_of_layer_1, quantization)
    assert "Answers would come from random weights, so the load was stopped" in text
    if quantization == "none":  # the fused stack of layer 1 comes out one expert short
        assert "2 weight(s) have another shape" in text and "model.layers.1.mlp.experts.gate_up_proj" in text
    else:
        assert "3 weight(s) of the model are not in the checkpoint" in text
        assert "model.layers.1.mlp.experts.2.down_proj.weight" in text


@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_gptq_tensors_under_a_config_that_does_not_say_gptq_are_refused(checkpoints, tmp_path, quantization):
    """Nothing would read them (no GPTQ backend is asked for): the experts would stay random."""
    text = refusal(checkpoints["qwen"], tmp_path / "gptq", as_gptq, quantization)
    assert "fit no weight of the model (model.layers.0.mlp.experts.0.down_proj.g_idx" in text
    assert "GPTQ-quantized tensors that this load does not read" in text
    missing = "model.layers.0.mlp.experts.down_proj" if quantization == "none" else \
        "model.layers.0.mlp.experts.0.down_proj.weight"
    assert missing in text


def test_a_fused_load_after_a_per_expert_one_is_still_fused(checkpoints):
    """Nothing in transformers is patched: the same folder loads fused again, with its experts kernels."""
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeExperts, Qwen2MoeForCausalLM

    folder = checkpoints["qwen"]
    before = load(folder)
    nf4 = load(folder, "float32", "4bit")
    after = load(folder)
    assert isinstance(nf4.model.model.layers[0].mlp.experts, PerExpertExperts)
    for loaded in (before, after):
        assert type(loaded.model) is Qwen2MoeForCausalLM and not loaded.per_expert
        assert isinstance(loaded.model.model.layers[0].mlp.experts, Qwen2MoeExperts)
        assert loaded.kernels.startswith("attention sdpa, experts ")
    assert torch.equal(logits(before.model), logits(after.model))


@pytest.mark.parametrize("model_type", ["mixtral", "llama"])
def test_4bit_warns_only_where_fused_experts_stay_unquantized(tmp_path, model_type):
    """Mixtral has no per-expert class here: its fused experts stay in the load dtype, and the sidebar says so. A
    dense Llama has no experts to warn about."""
    from transformers import AutoConfig, AutoModelForCausalLM

    sizes = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 4,
             "num_key_value_heads": 4, "vocab_size": 300}
    if model_type == "mixtral":
        sizes |= {"num_local_experts": 4, "num_experts_per_tok": 2}
    AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **sizes)).save_pretrained(tmp_path)
    loaded = load(tmp_path, "float32", "4bit")
    assert not loaded.per_expert
    warned = [w for w in loaded.warnings if "stay in float32" in w]
    assert len(warned) == (model_type == "mixtral"), loaded.warnings
