"""Builders of tiny checkpoints and other test data, shared by the test tiers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / "model_loader" / "checkpoints" / "demo-moe"
DIALOGUES = json.loads((ROOT / "scripts" / "demo_dialogues.json").read_text())
KNOWN_ANSWERS = {d["prompt"]: d["answer"] for d in DIALOGUES["dialogues"]}
FALLBACK = DIALOGUES["fallback"]


def build_random_qwen2_moe(folder: Path, seed: int = 1) -> Path:
    """A tiny untrained Qwen2-MoE (random weights, larger than the demo) that reuses the demo tokenizer."""
    import torch
    from transformers import GenerationConfig, Qwen2MoeConfig, Qwen2MoeForCausalLM

    torch.manual_seed(seed)
    demo = json.loads((DEMO_DIR / "config.json").read_text())
    config = Qwen2MoeConfig(
        vocab_size=demo["vocab_size"], hidden_size=128, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, moe_intermediate_size=64,
        shared_expert_intermediate_size=128, num_experts=6, num_experts_per_tok=3,
        max_position_embeddings=4096, tie_word_embeddings=False,
        bos_token_id=demo["bos_token_id"], eos_token_id=demo["eos_token_id"], pad_token_id=demo["pad_token_id"],
    )
    model = Qwen2MoeForCausalLM(config)
    model.generation_config = GenerationConfig(do_sample=False, eos_token_id=demo["eos_token_id"],
                                               pad_token_id=demo["pad_token_id"])
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(DEMO_DIR / name, folder / name)
    return folder


def write_models_toml(path: Path, model_id: str, name: str, folder: Path) -> Path:
    path.write_text(
        f'[[models]]\nid = "{model_id}"\nname = "{name}"\nsource = "local"\npath = "{folder}"\nkind = "chat"\n'
    )
    return path


QWEN_CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tiny_qwen_real_layout(folder: Path, seed: int = 2, **sizes: int) -> Path:
    """A tiny Qwen1.5-MoE-A2.7B-Chat look-alike: the real config.json keys at small sizes (`sizes` overrides them),
    per-expert tensors in safetensors, and the ChatML template inside tokenizer_config.json as Qwen ships it (no
    chat_template.jinja)."""
    import torch
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    real = json.loads((ROOT / "model_loader" / "configs" / "qwen1.5-moe-a2.7b-chat.json").read_text())
    demo_vocab = json.loads((DEMO_DIR / "config.json").read_text())["vocab_size"]
    config = dict(real, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                  shared_expert_intermediate_size=128, num_attention_heads=4, num_key_value_heads=4,
                  num_hidden_layers=2, num_experts=6, num_experts_per_tok=4, max_position_embeddings=1024,
                  max_window_layers=2, sliding_window=1024, vocab_size=demo_vocab, bos_token_id=0, eos_token_id=2,
                  architectures=["Qwen2MoeForCausalLM"], model_type="qwen2_moe", norm_topk_prob=False,
                  decoder_sparse_step=1, tie_word_embeddings=False, rope_theta=1e6)
    config.update(sizes)
    torch.manual_seed(seed)
    model = Qwen2MoeForCausalLM(Qwen2MoeConfig(**{k: v for k, v in config.items() if k != "torch_dtype"}))
    model.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(dict(config, torch_dtype="bfloat16"), indent=2))
    # The Qwen1.5 chat family's generation_config.json, with the tiny tokenizer's ids.
    (folder / "generation_config.json").write_text(json.dumps({
        "bos_token_id": 0, "pad_token_id": 0, "eos_token_id": [2, 0], "do_sample": True, "temperature": 0.7,
        "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05,
    }))
    shutil.copy(DEMO_DIR / "tokenizer.json", folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "model_max_length": 32768,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "chat_template": QWEN_CHATML,
    }))
    return folder


# Damage done to a copy of a checkpoint folder, as interrupted copies and failing disks do.

def truncate_last_shard(folder: Path) -> None:
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])


def delete_a_shard(folder: Path) -> None:
    sorted(folder.glob("model-*.safetensors"))[1].unlink()


def break_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": ')
