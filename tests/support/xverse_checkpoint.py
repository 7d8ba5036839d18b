"""Builder of a tiny random XVERSE-MoE checkpoint in the real layout: remote-code config, per-expert .bin shards."""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ["<sep>", "<pad>", "<|startoftext|>", "<|endoftext|>", "<|endofprompt|>", "<|endofknowledge|>"]
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
SHARDS = ("pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin")
TINY = {"hidden_size": 64, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_experts": 8, "moe_top_k": 3, "num_shared_experts": 2}
CORPUS = [
    "system: You are a helpful assistant.\nuser: Hello, who are you?\nassistant: I am a small model.",
    "user: What is a mixture of experts?\nassistant: A router sends each token to a few experts.",
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun all day long.",
    "Experts are small networks; the router picks the top ones for every token, and a shared expert sees all.",
    "In 2024 the model had 25.8 billion parameters, with 4.2 billion active for each token.",
    "user: Tell me a story.\nassistant: Once upon a time there was a tiny language model that liked to talk.",
    "Numbers like 12, 345 and 6789 are split into single digits before the merges are learned.",
    "assistant: Sure! Here is what I know: attention, rotary positions, and a softmax over the experts.",
]


def build_tokenizer_json(folder: Path) -> int:
    """Train a small byte-fallback BPE with the real special tokens at the real ids; return the vocabulary size."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation("isolated"),
    ])
    trainer_tok = Tokenizer(models.BPE(byte_fallback=True))
    trainer_tok.pre_tokenizer = pre_tokenizer
    # Special tokens first, then the 256 byte tokens: ids 0-5 are the real special ids, bytes follow.
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=1, show_progress=False,
                                  special_tokens=SPECIAL_TOKENS + BYTE_TOKENS)
    trainer_tok.train_from_iterator(CORPUS * 4, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    # Rebuild so byte_fallback is certainly on whatever the trainer kept.
    tok = Tokenizer(models.BPE(trained["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                                                  for m in trained["merges"]], byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁")])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    data = json.loads(tok.to_str())
    # The real file was written by an older tokenizers: Metaspace with `add_prefix_space`, not `prepend_scheme`.
    legacy = {"type": "Metaspace", "replacement": "▁", "add_prefix_space": True}
    data["pre_tokenizer"]["pretokenizers"][0] = dict(legacy)
    data["decoder"]["decoders"][1] = dict(legacy)
    text = json.dumps(data, ensure_ascii=False, indent=2)
    try:
        Tokenizer.from_str(text)
    except Exception:  # a tokenizers release without the legacy field: write the modern form instead
        text = tok.to_str(pretty=True)
    (folder / "tokenizer.json").write_text(text, encoding="utf-8")
    return tok.get_vocab_size(with_added_tokens=True)


def write_tokenizer_config(folder: Path) -> None:
    """PreTrainedTokenizerFast with the real bos/eos/pad and, like the base model, no chat template."""
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|startoftext|>",
              "eos_token": "<|endoftext|>", "pad_token": "<pad>", "model_max_length": 8192,
              "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def model_config(vocab_size: int, norm_topk_prob: bool | None, sizes: dict | None = None) -> dict:
    """config.json shaped like the real one (remote-code auto_map included), with tiny sizes."""
    config = {
        "architectures": ["XverseForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_xverse.XverseConfig",
                     "AutoModelForCausalLM": "modeling_xverse.XverseForCausalLM"},
        "model_type": "xverse", "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 3, "hidden_act": "silu",
        **TINY, **(sizes or {}), "initializer_range": 0.02, "max_position_embeddings": 8192,
        "max_tokenizer_truncation": 6144,
        "rms_norm_eps": 1e-06, "tie_word_embeddings": False, "rope_theta": 500000, "rope_scaling": None,
        "output_router_logits": False, "router_aux_loss_coef": 0.01, "torch_dtype": "bfloat16",
        "use_cache": True, "vocab_size": vocab_size,
    }
    if norm_topk_prob is not None:  # the real config has no such key
        config["norm_topk_prob"] = norm_topk_prob
    return config


def reference_state_dict(config: dict, seed: int) -> dict:
    """Random weights under the original per-expert names: bf16, except the routers kept in float32."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    shared = config["num_shared_experts"] * inter

    def rand(*shape: int, std: float, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * std).to(dtype)

    def norm() -> torch.Tensor:
        return (1.0 + 0.1 * torch.randn(hidden, generator=gen)).to(torch.bfloat16)

    sd = {"model.embed_tokens.weight": rand(vocab, hidden, std=1.0)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = norm()
        sd[p + "post_attention_layernorm.weight"] = norm()
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[p + f"self_attn.{name}.weight"] = rand(hidden, hidden, std=hidden**-0.5)
        # A wide router spread keeps the top-k choice clear of ties, so bf16 rounding cannot flip it.
        sd[p + "mlp.router.weight"] = rand(config["num_experts"], hidden, std=3 * hidden**-0.5, dtype=torch.float32)
        for e in range(config["num_experts"]):
            sd[p + f"mlp.experts.{e}.gate_proj.weight"] = rand(inter, hidden, std=hidden**-0.5)
            sd[p + f"mlp.experts.{e}.up_proj.weight"] = rand(inter, hidden, std=hidden**-0.5)
            sd[p + f"mlp.experts.{e}.down_proj.weight"] = rand(hidden, inter, std=inter**-0.5)
        sd[p + "mlp.shared_experts.gate_proj.weight"] = rand(shared, hidden, std=hidden**-0.5)
        sd[p + "mlp.shared_experts.up_proj.weight"] = rand(shared, hidden, std=hidden**-0.5)
        sd[p + "mlp.shared_experts.down_proj.weight"] = rand(hidden, shared, std=shared**-0.5)
    sd["model.norm.weight"] = norm()
    sd["lm_head.weight"] = rand(vocab, hidden, std=hidden**-0.5)
    return sd


def write_bin_shards(folder: Path, state_dict: dict) -> None:
    """Two torch.save shards split between the layers, and the pytorch_model.bin.index.json naming them."""
    import torch

    first = {k: v for k, v in state_dict.items() if k.startswith(("model.embed_tokens.", "model.layers.0."))}
    second = {k: v for k, v in state_dict.items() if k not in first}
    weight_map = {}
    for name, shard in zip(SHARDS, (first, second), strict=True):
        torch.save(shard, folder / name)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))


def build_tiny_xverse(folder: Path, seed: int = 0, norm_topk_prob: bool | None = None, **sizes: int) -> Path:
    """Write a tiny random XVERSE-MoE checkpoint into `folder` (no generation_config.json, like the real one may be);
    `sizes` overrides TINY's."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = build_tokenizer_json(folder)
    write_tokenizer_config(folder)
    config = model_config(vocab_size, norm_topk_prob, sizes)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_bin_shards(folder, reference_state_dict(config, seed))
    return folder


def read_bin_shards(folder: Path) -> dict:
    """The original per-expert tensors, straight from the .bin shards named by the index."""
    import torch

    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    state_dict: dict = {}
    for name in sorted(set(index["weight_map"].values())):
        state_dict.update(torch.load(folder / name, map_location="cpu", weights_only=True))
    return state_dict
