"""Builders of tiny checkpoints and other test data, shared by the test tiers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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
