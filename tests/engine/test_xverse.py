"""XVERSE-MoE on transformers v5: the real checkpoint layout loads, matches an independent reference, and chats."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.support.xverse_checkpoint import build_tiny_xverse, read_bin_shards

CPU_EXPERTS = ("eager", "batched_mm", "grouped_mm")  # all three run on CPU with torch >= 2.10
TEXT = "user: What is a mixture of experts?\nassistant: A router sends each token to 3 experts."
TWO_TURNS = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello, who are you?"},
    {"role": "assistant", "content": "I am a small model."},
    {"role": "user", "content": "What is 12?"},
]
EOS = 3
BF16_ROUTER_ERROR = 0.3  # bf16 activations move a router logit by ~0.07 at most here; keep 4x clear of that
# The published config.json of XVERSE-MoE-A4.2B (remote-code auto_map included), plus the `rope_scaling: null`
# some copies carry.
REAL_CONFIG = {
    "architectures": ["XverseForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_xverse.XverseConfig",
                 "AutoModelForCausalLM": "modeling_xverse.XverseForCausalLM"},
    "model_type": "xverse", "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 3, "hidden_act": "silu",
    "hidden_size": 2560, "initializer_range": 0.02, "intermediate_size": 1728, "max_position_embeddings": 8192,
    "max_tokenizer_truncation": 6144, "num_attention_heads": 32, "num_hidden_layers": 28, "rms_norm_eps": 1e-06,
    "tie_word_embeddings": False, "rope_theta": 500000, "rope_scaling": None, "moe_top_k": 6, "num_experts": 64,
    "num_shared_experts": 2, "output_router_logits": False, "router_aux_loss_coef": 0.01,
    "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 100534,
}


@pytest.fixture(scope="session")
def xverse_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_xverse(tmp_path_factory.mktemp("tiny-xverse"))


@pytest.fixture(scope="session")
def xverse_unnormalised_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_xverse(tmp_path_factory.mktemp("tiny-xverse-plain"), seed=1, norm_topk_prob=False)


@pytest.fixture(scope="session")
def registered() -> None:
    from model_loader.xverse import register

    register()


@pytest.fixture(scope="session")
def xverse_engine(settings, registry, xverse_dir):
    """An engine with the tiny XVERSE loaded through the app's own registry row, pointed at the local folder."""
    from chat_engine.engine import Engine

    engine = Engine(settings)
    engine.load(dataclasses.replace(registry.get("xverse-moe-a4.2b"), source="local", path=xverse_dir))
    yield engine
    engine.close()


def load(folder: Path, dtype: torch.dtype = torch.float32, **kwargs):
    """Plain `from_pretrained` as a user of transformers would call it, with the loading report."""
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=False,
                                                       output_loading_info=True, **kwargs)
    return model.eval(), info


@pytest.fixture(scope="session")
def unambiguous_ids(xverse_dir: Path) -> list[int]:
    """12 tokens whose every routing choice is clear by BF16_ROUTER_ERROR, so bf16 rounding cannot flip an expert.

    Built greedily: attention is causal, so appending a token never changes the routing of the ones before it.
    """
    cfg, _ = original_weights(xverse_dir)
    candidates = (torch.randperm(cfg["vocab_size"] - 6, generator=torch.Generator().manual_seed(0)) + 6).tolist()
    ids: list[int] = []
    for candidate in candidates:
        _, trace = reference(xverse_dir, ids + [candidate])
        if min(layer[-1] for layer in trace["margins"]) > BF16_ROUTER_ERROR:
            ids.append(candidate)
            if len(ids) == 12:
                return ids
    raise AssertionError("no 12-token input with clear routing: the builder's router spread changed?")


def prompt_ids(folder: Path) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).encode(TEXT, add_special_tokens=False)


# --- An independent reference: the description in xverse_moe.md, in float64 loops over the original tensors ---

def ref_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:  # [seq, hidden]
    return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def ref_rope(x: torch.Tensor, theta: float) -> torch.Tensor:  # [seq, heads, head_dim], positions 0..seq-1
    seq, _, dim = x.shape
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # [dim / 2]
    angles = torch.arange(seq, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [seq, dim / 2]
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1)[:, None, :]  # [seq, 1, dim]
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1)[:, None, :]
    rotated = torch.cat([-x[..., dim // 2:], x[..., : dim // 2]], dim=-1)
    return x * cos + rotated * sin


def ref_attention(x: torch.Tensor, w: dict, prefix: str, cfg: dict) -> torch.Tensor:  # [seq, hidden]
    seq, hidden = x.shape
    heads = cfg["num_attention_heads"]
    dim = hidden // heads
    q, k, v = (x @ w[f"{prefix}self_attn.{n}_proj.weight"].T for n in "qkv")
    theta = cfg["rope_theta"]
    q, k, v = (t.view(seq, heads, dim) for t in (q, k, v))
    q, k = ref_rope(q, theta), ref_rope(k, theta)
    out = torch.empty(seq, heads, dim, dtype=x.dtype)
    for h in range(heads):
        for t in range(seq):  # causal: position t sees positions 0..t
            scores = (k[: t + 1, h] @ q[t, h]) / math.sqrt(dim)  # [t + 1]
            out[t, h] = torch.softmax(scores, dim=0) @ v[: t + 1, h]
    return out.reshape(seq, hidden) @ w[f"{prefix}self_attn.o_proj.weight"].T


def ref_gated_mlp(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    return (F.silu(gate @ x) * (up @ x)) @ down.T  # x: [hidden]


def ref_moe(x: torch.Tensor, w: dict, prefix: str, cfg: dict, trace: dict) -> torch.Tensor:  # [seq, hidden]
    p = prefix + "mlp."
    top_k = cfg["moe_top_k"]
    out = torch.zeros_like(x)
    logits = x @ w[p + "router.weight"].T  # [seq, experts]
    trace["router_logits"].append(logits)
    trace["margins"].append([])  # per token: how far the last chosen expert's logit is above the first left out
    for t in range(x.shape[0]):
        probs = torch.softmax(logits[t], dim=0)
        order = sorted(range(cfg["num_experts"]), key=lambda e: -probs[e].item())
        trace["margins"][-1].append((logits[t, order[top_k - 1]] - logits[t, order[top_k]]).item())
        weights = {e: probs[e] for e in order[:top_k]}
        if cfg.get("norm_topk_prob", True):  # renormalised (+1e-6) unless the config turns it off
            total = sum(weights.values())
            weights = {e: p_e / (total + 1e-6) for e, p_e in weights.items()}
        for e, p_e in weights.items():
            expert = (w[f"{p}experts.{e}.{n}_proj.weight"] for n in ("gate", "up", "down"))
            out[t] += p_e * ref_gated_mlp(x[t], *expert)
        out[t] += ref_gated_mlp(x[t], *(w[f"{p}shared_experts.{n}_proj.weight"] for n in ("gate", "up", "down")))
    return out


@functools.cache
def original_weights(folder: Path) -> tuple[dict, dict]:
    """config.json and the per-expert tensors of the .bin shards, in float64."""
    cfg = json.loads((folder / "config.json").read_text())
    return cfg, {k: v.double() for k, v in read_bin_shards(folder).items()}


def reference(folder: Path, ids: list[int], norm_topk_prob: bool | None = None) -> tuple[torch.Tensor, dict]:
    """Logits [seq, vocab] in float64 from the original per-expert tensors, and the routing trace."""
    cfg, w = original_weights(folder)
    if norm_topk_prob is not None:
        cfg = {**cfg, "norm_topk_prob": norm_topk_prob}
    eps = cfg["rms_norm_eps"]
    trace: dict = {"router_logits": [], "margins": []}
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]  # [seq, hidden]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = x + ref_attention(ref_rms_norm(x, w[p + "input_layernorm.weight"], eps), w, p, cfg)
        x = x + ref_moe(ref_rms_norm(x, w[p + "post_attention_layernorm.weight"], eps), w, p, cfg, trace)
    x = ref_rms_norm(x, w["model.norm.weight"], eps)
    return x @ w["lm_head.weight"].T, trace


def model_logits(model, ids: list[int]) -> torch.Tensor:  # [seq, vocab], float64
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """Max deviation within `rel` of the logits' scale."""
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale, f"max |logit diff| {err:.3g} > {rel} x {scale:.3g}"


# --- a. the real layout loads, through the app's loader and through plain from_pretrained ---

def test_engine_loads_the_real_layout_with_the_registered_classes(xverse_engine, xverse_dir):
    from model_loader.xverse.modeling_xverse import XverseForCausalLM

    loaded = xverse_engine.backend.loaded
    assert "auto_map" in json.loads((xverse_dir / "config.json").read_text())  # it still names the remote code
    assert loaded.spec.trust_remote_code is False
    assert type(loaded.model) is XverseForCausalLM  # the registered class won over the auto_map
    assert loaded.model.dtype == torch.float32
    ids = prompt_ids(xverse_dir)
    assert_close(model_logits(loaded.model, ids), reference(xverse_dir, ids)[0], rel=1e-5)


@pytest.mark.parametrize("experts", CPU_EXPERTS)
def test_from_pretrained_loads_every_key(registered, xverse_dir, experts):
    model, info = load(xverse_dir, torch.bfloat16, experts_implementation=experts)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert not info["mismatched_keys"] and not info["error_msgs"]
    assert model.config._experts_implementation == experts
    router, experts_module = model.model.layers[0].mlp.router, model.model.layers[0].mlp.experts
    assert router.weight.dtype == torch.float32  # kept in float32 under bf16, as the original
    assert experts_module.gate_up_proj.dtype == torch.bfloat16
    # The fused tensors hold the per-expert ones: gate rows, then up rows.
    original = read_bin_shards(xverse_dir)
    e = 5
    gate, up = (original[f"model.layers.0.mlp.experts.{e}.{n}_proj.weight"] for n in ("gate", "up"))
    assert torch.equal(experts_module.gate_up_proj[e], torch.cat([gate, up]))
    assert torch.equal(experts_module.down_proj[e], original[f"model.layers.0.mlp.experts.{e}.down_proj.weight"])


def test_register_is_idempotent_and_importing_model_loader_does_not_load_torch(registered):
    from transformers import AutoConfig

    from model_loader.xverse import register

    register()
    register()
    assert AutoConfig.for_model("xverse").model_type == "xverse"
    code = "import sys, model_loader, model_loader.xverse; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_real_config_builds_the_published_25_8b_model(registered, tmp_path):
    from transformers import AutoConfig

    from model_loader.xverse.configuration_xverse import XverseConfig
    from model_loader.xverse.modeling_xverse import XverseForCausalLM

    (tmp_path / "config.json").write_text(json.dumps(REAL_CONFIG))
    config = AutoConfig.from_pretrained(tmp_path, trust_remote_code=False)  # auto_map present, no remote files
    assert type(config) is XverseConfig
    assert config.rope_parameters == {"rope_theta": 500000, "rope_type": "default"}
    assert (config.num_key_value_heads, config.norm_topk_prob, config.dtype) == (32, True, torch.bfloat16)
    with torch.device("meta"):
        model = XverseForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    # Per layer: attention 4 x 2560^2, router 64 x 2560, experts 64 x 3 x 2560 x 1728, shared 3 x 2560 x 3456, norms
    per_layer = 4 * 2560**2 + 64 * 2560 + 64 * 3 * 2560 * 1728 + 3 * 2560 * 3456 + 2 * 2560
    assert total == 28 * per_layer + 2 * 100534 * 2560 + 2560 == 25_778_352_640  # "25.8B parameters"


# --- b. logits equal an independent reference, for every experts implementation and dtype ---

@pytest.mark.parametrize("experts", CPU_EXPERTS)
def test_float32_logits_match_the_reference(registered, xverse_dir, experts):
    ids = prompt_ids(xverse_dir)
    model, _ = load(xverse_dir, torch.float32, experts_implementation=experts)
    expected = reference(xverse_dir, ids)[0]
    actual = model_logits(model, ids)
    assert_close(actual, expected, rel=1e-5)
    assert torch.equal(actual.argmax(-1), expected.argmax(-1))


@pytest.mark.parametrize("experts", CPU_EXPERTS)
def test_bfloat16_logits_match_the_reference(registered, xverse_dir, unambiguous_ids, experts):
    model, _ = load(xverse_dir, torch.bfloat16, experts_implementation=experts)
    assert_close(model_logits(model, unambiguous_ids), reference(xverse_dir, unambiguous_ids)[0], rel=2e-2)


@pytest.mark.parametrize("experts", CPU_EXPERTS)
def test_routing_is_renormalised_when_config_json_has_no_key(registered, xverse_dir, experts):
    assert "norm_topk_prob" not in json.loads((xverse_dir / "config.json").read_text())  # as the published one
    ids = prompt_ids(xverse_dir)
    model, _ = load(xverse_dir, experts_implementation=experts)
    assert model.config.norm_topk_prob is True
    actual = model_logits(model, ids)
    assert_close(actual, reference(xverse_dir, ids, norm_topk_prob=True)[0], rel=1e-5)
    without = reference(xverse_dir, ids, norm_topk_prob=False)[0]
    assert (actual - without).abs().max() > 1e-2  # renormalising really changes the answer


@pytest.mark.parametrize("experts", CPU_EXPERTS)
def test_norm_topk_prob_false_in_config_json_turns_renormalisation_off(registered, xverse_unnormalised_dir, experts):
    folder = xverse_unnormalised_dir
    ids = prompt_ids(folder)
    model, _ = load(folder, experts_implementation=experts)
    assert model.config.norm_topk_prob is False
    actual = model_logits(model, ids)
    assert_close(actual, reference(folder, ids, norm_topk_prob=False)[0], rel=1e-5)
    assert (actual - reference(folder, ids, norm_topk_prob=True)[0]).abs().max() > 1e-2


def test_router_logits_are_returned(registered, xverse_dir):
    ids = prompt_ids(xverse_dir)
    model, _ = load(xverse_dir)
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_router_logits=True)
    _, trace = reference(xverse_dir, ids)
    assert len(out.router_logits) == model.config.num_hidden_layers
    for got, want in zip(out.router_logits, trace["router_logits"], strict=True):
        assert got.shape == (len(ids), model.config.num_experts) and got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


# --- c. the KV cache and the attention kernels change nothing ---

def reference_greedy(folder: Path, ids: list[int], tokens: int) -> list[int]:
    """Greedy continuation by the float64 reference, each step recomputed from the whole sequence (no cache)."""
    ids = list(ids)
    for _ in range(tokens):
        ids.append(int(reference(folder, ids)[0][-1].argmax()))
    return ids


def test_cached_generation_equals_uncached_equals_the_reference(registered, xverse_dir):
    from transformers import DynamicCache

    from model_loader.xverse.modeling_xverse import CACHE_FIELD

    model, _ = load(xverse_dir)
    prompt = prompt_ids(xverse_dir)
    input_ids = torch.tensor([prompt])
    kwargs = {"max_new_tokens": 24, "min_new_tokens": 24, "do_sample": False, "pad_token_id": 1}
    with torch.no_grad():
        cached = model.generate(input_ids, **kwargs).tolist()[0]  # what the app does: the default cache
        explicit = model.generate(input_ids, use_cache=True, **{CACHE_FIELD: DynamicCache(config=model.config)},
                                  **kwargs).tolist()[0]
        uncached = model.generate(input_ids, use_cache=False, **kwargs).tolist()[0]
    assert len(cached) == len(prompt) + 24
    expected = reference_greedy(xverse_dir, prompt, 24)
    assert len(set(expected[len(prompt):])) > 3  # a real continuation, not one token repeated
    assert cached == explicit == uncached == expected


def test_the_cache_is_accepted_under_both_names(registered, xverse_dir):
    """5.24's `generate` passes `cache=`, 5.23's `past_key_values=`: a second step must see the first either way."""
    from transformers import DynamicCache

    model, _ = load(xverse_dir)
    ids = prompt_ids(xverse_dir)
    whole = model_logits(model, ids)[-1]
    for name in ("cache", "past_key_values"):
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(torch.tensor([ids[:-1]]), use_cache=True, **{name: cache})
            assert cache.get_seq_length() == len(ids) - 1
            last = model(torch.tensor([ids[-1:]]), use_cache=True, **{name: cache}).logits[0, -1].double()
        torch.testing.assert_close(last, whole, rtol=1e-5, atol=1e-5)


def test_load_and_generate_raise_no_deprecation_warning(registered, xverse_dir):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        model, _ = load(xverse_dir)
        with torch.no_grad():
            model.generate(torch.tensor([prompt_ids(xverse_dir)]), max_new_tokens=3, do_sample=False,
                           pad_token_id=1)


def test_left_padded_batch_continues_each_prompt_as_alone(registered, xverse_dir):
    from transformers import AutoTokenizer

    model, _ = load(xverse_dir)
    tok = AutoTokenizer.from_pretrained(xverse_dir, padding_side="left")
    prompts = ["user: Hello, who are you?\nassistant: ", "What is 12?"]
    batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert batch["attention_mask"][1, 0] == 0  # the short prompt really is padded
    kwargs = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False, "pad_token_id": 1}
    with torch.no_grad():
        together = model.generate(**batch, **kwargs)[:, -8:].tolist()
        alone = [model.generate(**tok(p, return_tensors="pt", add_special_tokens=False), **kwargs)[0, -8:].tolist()
                 for p in prompts]
    assert together == alone


def test_sdpa_and_eager_attention_agree(registered, xverse_dir):
    ids = prompt_ids(xverse_dir)
    sdpa, _ = load(xverse_dir, attn_implementation="sdpa")
    eager, _ = load(xverse_dir, attn_implementation="eager")
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    torch.testing.assert_close(model_logits(sdpa, ids), model_logits(eager, ids), rtol=1e-5, atol=1e-5)


def test_save_pretrained_writes_the_original_layout_back(registered, xverse_dir, tmp_path):
    from safetensors import safe_open

    model, _ = load(xverse_dir)
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as saved:
        keys = set(saved.keys())
    assert keys == set(read_bin_shards(xverse_dir))
    reloaded, info = load(tmp_path)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    ids = prompt_ids(xverse_dir)
    assert torch.equal(model_logits(reloaded, ids), model_logits(model, ids))


# --- d. chat through the engine in the XVERSE format ---

def test_two_turn_prompt_in_the_xverse_format(xverse_engine):
    from chat_engine.prompt import encode_prompt

    prompt = xverse_engine.render_prompt(TWO_TURNS)
    assert prompt == ("system: You are a helpful assistant.\nuser: Hello, who are you?\n"
                      "assistant: I am a small model.<|endoftext|>user: What is 12?\nassistant: ")
    tok = xverse_engine.backend.loaded.tokenizer
    ids = encode_prompt(tok, TWO_TURNS, device="cpu")["input_ids"][0].tolist()
    first = tok.encode("system: You are a helpful assistant.\nuser: Hello, who are you?\n"
                       "assistant: I am a small model.", add_special_tokens=False)
    second = tok.encode("user: What is 12?\nassistant: ", add_special_tokens=False)
    assert ids == first + [EOS] + second
    assert ids.count(EOS) == 1 and EOS not in first + second  # one control token, not "<|endoftext|>" spelled out
    pieces = tok.convert_ids_to_tokens(second)
    assert pieces[pieces.index("1") + 1] == "2"  # digits are split one by one
    assert tok.decode(ids) == prompt.replace("<|endoftext|>", "<|endoftext|> ")  # Metaspace: a word starts with ▁


def test_chat_streams_the_greedy_decode(xverse_engine):
    from chat_engine.params import GenerationParams
    from chat_engine.prompt import encode_prompt

    loaded = xverse_engine.backend.loaded
    stream = xverse_engine.chat(TWO_TURNS, GenerationParams(max_new_tokens=10))
    text = stream.text()
    assert text and stream.result.new_tokens > 1  # something was really generated and streamed
    enc = encode_prompt(loaded.tokenizer, TWO_TURNS, device="cpu")
    with torch.no_grad():
        out = loaded.model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=1)
    assert text == loaded.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


# --- e. no chat format anywhere is an explained error ---

def test_missing_chat_template_is_a_chat_template_error(settings, registry, xverse_dir):
    from chat_engine.engine import Engine
    from common.errors import ChatTemplateError

    spec = dataclasses.replace(registry.get("xverse-moe-a4.2b"), id="xverse-no-template", source="local",
                               path=xverse_dir, chat_template=None)
    engine = Engine(settings)
    try:
        engine.load(spec)
        with pytest.raises(ChatTemplateError, match="no chat template"):
            engine.render_prompt(TWO_TURNS)
        with pytest.raises(ChatTemplateError, match="chat_template"):
            engine.chat(TWO_TURNS)
    finally:
        engine.close()


# --- GPU: the fused kernels and bf16 on CUDA ---

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("experts", CPU_EXPERTS)
def test_cuda_bf16_matches_the_reference(registered, xverse_dir, unambiguous_ids, experts):
    ids = unambiguous_ids
    model, info = load(xverse_dir, torch.bfloat16, experts_implementation=experts, device_map="auto")
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert model.device.type == "cuda"
    with torch.no_grad():
        actual = model(torch.tensor([ids], device=model.device)).logits[0].double().cpu()
    assert_close(actual, reference(xverse_dir, ids)[0], rel=3e-2)
