"""The memory planner: counts derived by hand for the seed models, the loader's placement, verdicts and byte math."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from model_loader.registry import ModelSpec, load_registry
from planner import facts_cache as planner_facts_cache
from planner import planning as planner
from planner.facts import config_text
from planner.planning import (
    MemoryPlan,
    PlanError,
    config_for_spec,
    loader_max_memory,
    model_facts,
    plan,
    plan_memory,
    read_config,
    simulate_device_map,
)
from planner.shipped_facts import (
    SHIPPED_DIR,
    count_registry_facts,
    dump_shipped,
    read_shipped_facts,
    shipped_key,
)
from planner.sizes import CUDA_CONTEXT_BYTES

GIB = 2**30
CONFIGS = Path(__file__).resolve().parents[2] / "model_loader" / "configs"
DEMO = Path(__file__).resolve().parents[2] / "model_loader" / "checkpoints" / "demo-moe"
# A dense Llama-2-7B shape: bitsandbytes quantizes its nn.Linear MLPs, so 8/4-bit verdicts show on it.
LLAMA_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}
# Mixtral-8x7B's shape: an MoE the app has no per-expert block for, so quantized loads leave its experts bf16.
MIXTRAL_8X7B = {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "num_local_experts": 8,
                "num_experts_per_tok": 2, "max_position_embeddings": 32768}


@pytest.fixture(scope="module", autouse=True)
def _quiet():
    # transformers warns that imaginary GPU indices are not available; that is the point here.
    logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def qwen():
    return model_facts(read_config(CONFIGS / "qwen1.5-moe-a2.7b-chat.json"))


@pytest.fixture(scope="module")
def xverse():
    return model_facts(read_config(CONFIGS / "xverse-moe-a4.2b.json"))


@pytest.fixture(scope="module")
def demo():
    return model_facts(read_config(DEMO))


@pytest.fixture(scope="module")
def llama():
    return model_facts(LLAMA_7B)


@pytest.fixture(scope="module")
def mixtral():
    return model_facts(MIXTRAL_8X7B)


# --- counting, by hand --------------------------------------------------------------------------------------------

def qwen_by_hand() -> dict[str, int]:
    """Qwen1.5-MoE-A2.7B from its config.json: 24 layers, hidden 2048, 16 heads of 128, 60 experts, top 4."""
    h, layers, vocab, experts, top_k, inter, shared_inter, heads, kv_heads, head_dim = (
        2048, 24, 151936, 60, 4, 1408, 5632, 16, 16, 128)
    attention = (h * heads * head_dim + heads * head_dim  # q_proj + bias
                 + 2 * (h * kv_heads * head_dim + kv_heads * head_dim)  # k_proj, v_proj + biases
                 + heads * head_dim * h)  # o_proj
    router = experts * h  # mlp.gate [60, 2048]
    routed = experts * (2 * inter * h + h * inter)  # fused gate_up_proj [60, 2816, 2048] + down_proj [60, 2048, 1408]
    shared = 3 * h * shared_inter + h  # shared_expert gate/up/down + shared_expert_gate [1, 2048]
    norms = 2 * h
    embed_and_head = 2 * vocab * h
    return {
        "attention": attention, "routed": routed, "shared": shared, "router": router,
        "total": embed_and_head + layers * (attention + router + routed + shared + norms) + h,
        "active": embed_and_head + layers * (attention + router + routed * top_k // experts + shared + norms) + h,
        "kv_per_token": 2 * layers * kv_heads * head_dim * 2,
        "rotary": 2 * (head_dim // 2) * 4,  # buffers inv_freq and original_inv_freq, float32 [64]
        # 8-bit / 4-bit: q/k/v/o, the shared expert and, split into one Linear per expert and projection, the routed
        # experts are quantized; biases, norms, the router, the one-row shared_expert_gate, embed_tokens and lm_head
        # stay bf16. Per layer: (weights, output rows) of each quantized matrix.
        "matrices": layers * ([(h * h, h)] * 4 + [(h * shared_inter, shared_inter)] * 2 + [(shared_inter * h, h)]
                              + experts * [(inter * h, inter), (inter * h, inter), (h * inter, h)]),
    }


def nf4_by_hand(numel: int) -> int:
    """One matrix in bitsandbytes nf4 with nested scales: 4 bits per weight, an 8-bit scale per block of 64, a
    float32 scale per 256 blocks, and 16 + 256 float32 codes plus a float32 offset."""
    blocks = numel // 64
    return numel // 2 + blocks + 4 * math.ceil(blocks / 256) + 4 * (16 + 256) + 4


def xverse_by_hand() -> dict[str, int]:
    """XVERSE-MoE-A4.2B: 28 layers, hidden 2560, 32 heads of 80, 64 experts of 1728, top 6, 2 shared (one MLP)."""
    h, layers, vocab, experts, top_k, inter, n_shared, heads = 2560, 28, 100534, 64, 6, 1728, 2, 32
    attention = 4 * h * h  # q, k, v, o; no bias
    router = experts * h
    routed = experts * 3 * h * inter
    shared = 3 * h * (n_shared * inter)
    norms = 2 * h
    embed_and_head = 2 * vocab * h
    return {
        "router": router, "layers": layers,
        "total": embed_and_head + layers * (attention + router + routed + shared + norms) + h,
        "active": embed_and_head + layers * (attention + router + routed * top_k // experts + shared + norms) + h,
        "kv_per_token": 2 * layers * heads * (h // heads) * 2,
        "rotary": 2 * (h // heads // 2) * 4,  # buffers inv_freq and original_inv_freq, float32 [40]
    }


def test_qwen_counts_match_the_hand_derivation(qwen):
    hand = qwen_by_hand()
    result = plan_memory(qwen, "bf16", [], 4096)
    assert hand["total"] == result.total_params == 14_315_784_192  # the reference's meta-build count
    assert result.active_params == hand["active"]  # 2.69B: the published "A2.7B"
    assert result.weight_bytes == 2 * hand["total"] + hand["rotary"]
    assert result.kv_bytes_per_token == hand["kv_per_token"] == 196_608
    assert result.kv_bytes == 196_608 * 4096
    groups = {g: t for g, t, _ in result.params_by_group}
    assert groups["attention"] == 24 * hand["attention"]
    assert groups["routed_experts"] == 24 * hand["routed"]
    assert groups["shared_experts"] == 24 * hand["shared"]
    assert groups["router"] == 24 * hand["router"]


def test_xverse_counts_match_the_hand_derivation(xverse):
    hand = xverse_by_hand()
    result = plan_memory(xverse, "bf16", [], 4096)
    assert hand["total"] == result.total_params == 25_778_352_640
    assert result.active_params == hand["active"]  # 4.23B: the published "A4.2B"
    # bf16 weights, except the routers, which XVERSE keeps in float32 (4 bytes instead of 2)
    assert result.weight_bytes == 2 * hand["total"] + 2 * hand["layers"] * hand["router"] + hand["rotary"]
    assert result.kv_bytes_per_token == hand["kv_per_token"] == 286_720


def test_dense_llama_counts(llama):
    result = plan_memory(llama, "bf16", [], 2048)
    assert result.total_params == result.active_params == 6_738_415_616  # Llama-2-7B
    assert result.num_experts == 0


def test_int8_and_int4_byte_math(qwen):
    hand = qwen_by_hand()
    quantized = sum(n for n, _ in hand["matrices"])
    kept = hand["total"] - quantized
    rotary = hand["rotary"]
    assert quantized / hand["total"] > 0.95  # the routed experts are most of the model: they must shrink
    # 8-bit: 1 byte per weight + one float32 scale per output row; 4-bit: nf4_by_hand per matrix.
    assert plan_memory(qwen, "int8").weight_bytes == (2 * kept + quantized + 4 * sum(r for _, r in hand["matrices"])
                                                      + rotary)
    nf4 = sum(nf4_by_hand(n) for n, _ in hand["matrices"])
    int4 = plan_memory(qwen, "int4")
    assert int4.weight_bytes == 2 * kept + nf4 + rotary
    assert int4.weight_bytes == 8_318_409_248  # 7.75 GiB: 4.13 bits per quantized weight
    assert (int4.quantized_params, int4.quantized_bytes) == (quantized, nf4)
    assert plan_memory(qwen, "bf16").quantized_params == 0
    assert plan_memory(qwen, "fp32").weight_bytes == 4 * hand["total"] + rotary
    assert plan_memory(qwen, "int8").kv_bytes_per_token == 196_608  # the KV cache stays in the bf16 compute dtype
    assert plan_memory(qwen, "fp32").kv_bytes_per_token == 2 * 196_608


def test_working_memory_formula(qwen):
    result = plan_memory(qwen, "bf16", [24 * GIB] * 2, 4096)
    hand = qwen_by_hand()
    layer_active = (hand["attention"] + hand["router"] + hand["routed"] * 4 // 60 + hand["shared"] + 2 * 2048)
    assert result.activation_bytes_per_token == 2 * (2 * 2048 + layer_active // 2048)
    assert result.working_bytes == CUDA_CONTEXT_BYTES + 4096 * result.activation_bytes_per_token
    assert result.rule_of_thumb_bytes == math.floor(2 * 1.2 * hand["total"])


# --- placement: the same device map transformers computes ---------------------------------------------------------

def meta_model(config: dict, per_expert: bool = False, **changes):
    """The model the loader builds: fused experts, or (quantized loads) the per-expert class."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from model_loader.per_expert import PER_EXPERT_CLASSES
    from model_loader.xverse import register

    register()
    hf_config = AutoConfig.for_model(**{**config, **changes})
    with torch.device("meta"):
        if per_expert:
            return PER_EXPERT_CLASSES[hf_config.model_type](hf_config).to(torch.bfloat16)
        return AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)


class FakeBnb:
    """What `_get_device_map` asks of a bitsandbytes quantizer, by bitsandbytes' rules: exactly-nn.Linear weights (not
    the lm_head) count 1 (8-bit) or 0.5 (4-bit) bytes, and max_memory loses 10% for quantization buffers."""

    def __init__(self, model, element_size: float):
        from torch import nn
        from transformers.quantizers.base import get_keys_to_not_convert
        from transformers.quantizers.quantizers_utils import should_convert_module

        skip = get_keys_to_not_convert(model)
        self.quantized = {f"{n}.weight" for n, m in model.named_modules()
                          if type(m) is nn.Linear and should_convert_module(n, skip)}
        self.element_size = element_size

    def param_element_size(self, model, name, param):
        return self.element_size if name in self.quantized else param.element_size()

    def adjust_max_memory(self, max_memory):
        return {k: v * 0.90 for k, v in max_memory.items()}

    def validate_environment(self, *args, **kwargs):
        pass


def transformers_device_map(model, max_memory: dict, quantizer=None) -> dict:
    """What from_pretrained(device_map="auto", max_memory=...) computes (modeling_utils calls exactly this)."""
    from transformers.integrations.accelerate import _get_device_map

    return dict(_get_device_map(model, "auto", dict(max_memory), quantizer))


@pytest.mark.parametrize("gpus", [[24] * 2, [24] * 3, [80], [12] * 2, [24, 80]], ids=str)
@pytest.mark.parametrize("name", ["qwen1.5-moe-a2.7b-chat", "xverse-moe-a4.2b"])
def test_split_matches_transformers(name, gpus):
    config = read_config(CONFIGS / f"{name}.json")
    facts, model = model_facts(config), meta_model(config)
    max_memory = loader_max_memory([g * GIB for g in gpus])
    assert max_memory["cpu"] == 0 and max_memory[0] == int(float(f"{0.9 * gpus[0]:.2f}") * GIB)  # the loader's caps
    assert simulate_device_map(facts, "bf16", max_memory) == transformers_device_map(model, max_memory)


@pytest.mark.parametrize("dtype,element", [("int8", 1), ("int4", 0.5)])
@pytest.mark.parametrize("gpus", [[8] * 2, [4] * 3, [4, 6], [12] * 2], ids=str)
@pytest.mark.parametrize("name", ["qwen1.5-moe-a2.7b-chat", "xverse-moe-a4.2b"])
def test_quantized_split_matches_transformers(name, dtype, element, gpus):
    """The fused facts plan the per-expert model a quantized load builds: same split as transformers computes."""
    config = read_config(CONFIGS / f"{name}.json")
    model = meta_model(config, per_expert=True)
    max_memory = loader_max_memory([g * GIB for g in gpus])
    assert simulate_device_map(model_facts(config), dtype, max_memory) == transformers_device_map(
        model, max_memory, FakeBnb(model, element))


@pytest.mark.parametrize("max_memory", [{0: 900_000, 1: 900_000, "cpu": 0}, {0: 700_000, 1: 700_000, "cpu": 0},
                                        {0: 2_000_000, "cpu": 0}, {0: 400_000, 1: 400_000, 2: 2_000_000, "cpu": 0},
                                        {0: 300_000, "cpu": 0}])
@pytest.mark.parametrize("tied", [False, True])
def test_demo_split_at_scaled_down_sizes_matches_transformers(max_memory, tied):
    config = read_config(DEMO)
    facts = model_facts({**config, "tie_word_embeddings": tied})
    model = meta_model(config, tie_word_embeddings=tied)
    assert simulate_device_map(facts, "bf16", max_memory) == transformers_device_map(model, max_memory)


@pytest.mark.parametrize("cpu_bytes", [2_000_000, 900_000, 300_000])
def test_demo_split_matches_a_real_from_pretrained(demo, cpu_bytes, tmp_path):
    """A real load of the bundled checkpoint: CPU and disk stand in for GPUs, same algorithm."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(DEMO, dtype=torch.bfloat16, device_map="auto",
                                                 max_memory={"cpu": cpu_bytes}, offload_folder=str(tmp_path))
    loaded = getattr(model, "hf_device_map", None) or {"": "cpu"}  # set only when the map has several devices
    assert simulate_device_map(demo, "bf16", {"cpu": cpu_bytes}) == loaded


def test_per_gpu_split_reports_layers_and_bytes(qwen):
    result = plan_memory(qwen, "bf16", [24 * GIB] * 2, 4096)
    first, second = result.gpus
    assert (first.layers, first.modules) == (tuple(range(12)), ("embed_tokens",))
    assert (second.layers, second.modules) == (tuple(range(12, 24)), ("norm", "lm_head"))
    assert first.weight_bytes + second.weight_bytes == result.weight_bytes
    assert first.kv_bytes == 12 * (196_608 // 24) * 4096
    assert result.spilled_bytes == 0 and dict(result.device_map)["model.layers.11"] == 0


def test_too_small_gpus_spill(xverse):
    result = plan_memory(xverse, "bf16", [24 * GIB], 4096)
    assert result.spilled_bytes > 0 and "disk" in dict(result.device_map).values()
    assert result.max_context == 0 and result.verdict == "needs 4-bit" and result.gpus_needed == 3


# --- verdicts and the longest context -----------------------------------------------------------------------------

@pytest.mark.parametrize("facts_name,dtype,gpus,context,verdict,needed", [
    ("qwen", "bf16", [24] * 2, 4096, "fits", 2),
    ("qwen", "bf16", [24] * 3, 4096, "fits with 2 GPUs", 2),
    ("xverse", "bf16", [80] * 2, 4096, "fits with 1 GPU", 1),
    ("xverse", "bf16", [24] * 3, 8192, "fits", 3),
    ("qwen", "fp32", [24] * 2, 4096, "needs bf16", 3),
    ("llama", "bf16", [12], 2048, "needs 8-bit", 2),
    ("llama", "bf16", [8], 2048, "needs 4-bit", 2),
    ("llama", "int8", [8], 2048, "needs 4-bit", 2),
    ("llama", "bf16", [14], 2048, "needs 8-bit", 2),  # the weights fit, 2,048 tokens of context do not
    ("xverse", "bf16", [24] * 2, 4096, "needs 8-bit", 3),  # per-expert 8-bit: 24.5 GiB over two cards
    ("xverse", "int4", [24], 8192, "fits", 1),  # per-expert nf4: both seeds on one 24 GiB card, whole window
    ("qwen", "int4", [24], 32768, "fits", 1),
    ("xverse", "int4", [12] * 2, 8192, "fits", 2),
    ("qwen", "int4", [12] * 2, 8192, "fits with 1 GPU", 1),
    ("mixtral", "int4", [24] * 2, 4096, "does not fit", 7),  # no per-expert block: its fused experts stay bf16
    ("qwen", "bf16", [], 4096, "no GPU detected", None),
])
def test_verdicts(request, facts_name, dtype, gpus, context, verdict, needed):
    result = plan_memory(request.getfixturevalue(facts_name), dtype, [g * GIB for g in gpus], context)
    assert (result.verdict, result.gpus_needed) == (verdict, needed), result.advice
    assert result.advice


def test_quantization_advice_names_the_fused_experts(mixtral):
    assert "fused MoE experts" in plan_memory(mixtral, "bf16", [24 * GIB] * 2).advice


@pytest.mark.parametrize("dtype", ["int8", "int4"])
@pytest.mark.parametrize("gpus", [[24] * 2, [8], []], ids=str)
def test_8_and_4_bit_advice_says_the_fused_experts_stay_bf16(mixtral, qwen, llama, dtype, gpus):
    """An MoE without a per-expert block in the app keeps its fused experts in bf16 and the advice says so; the
    seeds (per-expert) and a dense model shrink."""
    advice = plan_memory(mixtral, dtype, [g * GIB for g in gpus]).advice
    bf16 = plan_memory(mixtral, "bf16").weight_bytes
    assert "fused MoE experts stay bf16" in advice and f"(bf16: {bf16 / GIB:.2f} GiB)" in advice and "\n" not in advice
    for facts, context in ((qwen, 4096), (llama, 2048)):
        assert "fused" not in plan_memory(facts, dtype, [g * GIB for g in gpus], context).advice


@pytest.mark.parametrize("gpus", [[16] * 2, [30], [14]], ids=str)
def test_longest_context_is_the_edge_of_fitting(request, gpus):
    facts = request.getfixturevalue("llama" if gpus == [14] else "qwen")
    result = plan_memory(facts, "bf16", [g * GIB for g in gpus], 1024)
    longest = result.max_context
    assert 0 < longest < facts.max_position_embeddings
    per_layer_kv = result.kv_bytes_per_token // facts.num_layers
    by_hand = min((s.total_bytes - s.weight_bytes - CUDA_CONTEXT_BYTES)
                  // (per_layer_kv * len(s.layers) + result.activation_bytes_per_token) for s in result.gpus)
    assert longest == by_hand
    assert all(s.free_bytes >= 0 for s in plan_memory(facts, "bf16", [g * GIB for g in gpus], longest).gpus)
    assert any(s.free_bytes < 0 for s in plan_memory(facts, "bf16", [g * GIB for g in gpus], longest + 1).gpus)


def test_longest_context_is_capped_by_the_model_window(qwen):
    assert plan_memory(qwen, "bf16", [80 * GIB], 4096).max_context == 32_768


# --- inputs -------------------------------------------------------------------------------------------------------

def test_plan_takes_a_registry_row_and_is_frozen():
    registry = load_registry()
    result = plan(registry.get("xverse-moe-a4.2b-chat"), "bf16", [24 * GIB] * 3, 4096)
    assert isinstance(result, MemoryPlan) and result.total_params == 25_778_352_640
    with pytest.raises(AttributeError):
        result.verdict = "fits"  # type: ignore[misc]
    assert plan(registry.get("demo-moe"), "bf16", [1 * GIB], 512).verdict == "fits"
    assert plan(registry.get("demo-moe"), "bf16", [1 * GIB]).context == 2048  # the default, cut to its window
    assert config_for_spec(registry.get("demo-moe"))["num_experts"] == 8


@pytest.mark.parametrize("kwargs,message", [
    ({"dtype": "fp8"}, "not one of"), ({"context": 0}, "at least 1"), ({"context": 40_000}, "window"),
    ({"gpu_bytes": [0]}, "positive"),
])
def test_bad_inputs_raise_plan_errors(qwen, kwargs, message):
    with pytest.raises(PlanError, match=message):
        plan_memory(qwen, **{"dtype": "bf16", "gpu_bytes": [24 * GIB], "context": 4096, **kwargs})


def test_unbuildable_config_is_a_plan_error():
    with pytest.raises(PlanError, match="cannot build"):
        model_facts({"model_type": "no-such-architecture", "hidden_size": 8})


def test_facts_are_cached_on_disk(tmp_path, demo):
    config = {**read_config(DEMO), "vocab_size": 577}  # a config no other test built
    first = model_facts(config, tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1
    planner_facts_cache._cached_facts.cache_clear()
    assert model_facts(config, tmp_path) == first  # read back from the file, equal field by field


# --- where configs and facts come from ----------------------------------------------------------------------------

def test_the_facade_exports_exactly_the_public_names():
    names = {"plan", "stored_dtype", "plan_memory", "model_facts", "config_for_spec", "read_config", "facts_cache_dir",
             "simulate_device_map", "loader_max_memory", "human_bytes", "DTYPES", "DEFAULT_CONTEXT", "PlanError",
             "MemoryPlan", "GpuShare", "ModelFacts"}
    assert set(planner.__all__) == names and all(hasattr(planner, name) for name in names)


def test_a_gptq_row_plans_as_4_bit_whatever_dtype_is_asked():
    gptq = load_registry().get("qwen1.5-moe-a2.7b-chat-gptq-int4")
    result = plan(gptq, "bf16", [24 * GIB])
    original = plan(load_registry().get("qwen1.5-moe-a2.7b-chat"), "int4", [24 * GIB])
    assert result.dtype == "int4" and result.verdict == "fits" and result.weight_bytes == original.weight_bytes


def test_config_for_spec_reads_the_row_copy_else_the_local_folder():
    chat = load_registry().get("xverse-moe-a4.2b-chat")  # shares the base model's copy
    assert config_for_spec(chat) == read_config(CONFIGS / "xverse-moe-a4.2b.json")
    assert config_for_spec(ModelSpec(id="mine", name="mine", source="local", path=DEMO)) == read_config(DEMO)
    far = ModelSpec(id="far", name="far", source="modelscope", modelscope_id="someone/far")
    with pytest.raises(PlanError, match=r"No config is cached for 'far'.*python -m planner someone/far"):
        config_for_spec(far)


def test_shipped_facts_equal_a_recount_with_the_installed_transformers():
    """Drift guard: a transformers upgrade that changes any count fails here, not in a user's plan."""
    shipped = {p.name: p.read_text(encoding="utf-8") for p in SHIPPED_DIR.glob("*.json")}
    recount = count_registry_facts(load_registry())
    assert set(recount) == set(shipped), "run: python scripts/refresh_plan_facts.py"
    for name, document in recount.items():
        counted_by = json.loads(shipped[name])["transformers"]
        assert dump_shipped({**document, "transformers": counted_by}) == shipped[name], (
            f"{name} (counted with transformers {counted_by}) differs from a recount with "
            f"{document['transformers']}: run python scripts/refresh_plan_facts.py")


def test_built_in_rows_plan_from_shipped_facts_without_a_build(monkeypatch):
    def build(config):
        raise AssertionError("meta build")

    monkeypatch.setattr(planner_facts_cache, "build_facts", build)
    planner_facts_cache._cached_facts.cache_clear()
    for spec in load_registry().specs:
        assert model_facts(config_for_spec(spec)).num_layers > 0, spec.id
    with pytest.raises(AssertionError, match="meta build"):  # any other config is counted
        model_facts({**read_config(DEMO), "vocab_size": 599})


def test_a_damaged_shipped_file_is_ignored(tmp_path, caplog):
    text = config_text(read_config(DEMO))
    (tmp_path / f"demo-moe.{shipped_key(text)}.json").write_text("{not json", encoding="utf-8")
    assert read_shipped_facts(text, tmp_path) is None and "unreadable shipped facts" in caplog.text
    assert read_shipped_facts(text) is not None and read_shipped_facts(text[:-1] + ', "x": 1}') is None
