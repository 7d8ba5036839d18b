"""A tiny Qwen1.5-MoE in the real checkpoint layout loads and chats through the app's own loader."""

from __future__ import annotations

import dataclasses
import json

import pytest
from safetensors import safe_open

from chat_engine.engine import Engine
from chat_engine.params import GenerationParams
from chat_engine.prompt import encode_prompt
from tests.support.helpers import build_tiny_qwen_real_layout

CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "A demo."},
    {"role": "user", "content": "What is 2 + 2?"},
]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory, settings, registry):
    folder = build_tiny_qwen_real_layout(tmp_path_factory.mktemp("qwen-real-layout"))
    spec = dataclasses.replace(registry.get("qwen1.5-moe-a2.7b-chat"), source="local", path=folder, gpu_only=False)
    engine = Engine(settings)
    engine.load(spec)
    yield engine, folder
    engine.close()


def test_checkpoint_is_in_the_real_layout(qwen):
    _, folder = qwen
    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "model.layers.0.mlp.experts.5.gate_proj.weight" in keys  # one tensor per expert, as Qwen ships
    assert {"model.layers.1.mlp.shared_expert.up_proj.weight", "model.layers.1.mlp.shared_expert_gate.weight",
            "model.layers.0.mlp.gate.weight", "model.layers.0.self_attn.q_proj.bias"} <= keys
    assert "chat_template" in json.loads((folder / "tokenizer_config.json").read_text())
    assert not (folder / "chat_template.jinja").exists()


def test_exact_prompt_from_the_tokenizers_own_template(qwen):
    engine, _ = qwen
    assert engine.render_prompt(CONVERSATION) == (
        "<|im_start|>system\nYou answer briefly.<|im_end|>\n"
        "<|im_start|>user\nWho are you?<|im_end|>\n"
        "<|im_start|>assistant\nA demo.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # With no system message the template adds Qwen's implicit one.
    assert engine.render_prompt(CONVERSATION[1:2]).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWho are you?")


def test_control_tokens_are_single_ids(qwen):
    engine, _ = qwen
    tok = engine.backend.loaded.tokenizer
    ids = encode_prompt(tok, CONVERSATION, "cpu")["input_ids"][0].tolist()
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert ids.count(im_start) == 5 and ids.count(im_end) == 4
    assert ids[:1] == [im_start] and ids[-3:-2] == [im_start]


def test_defaults_come_from_its_generation_config(qwen):
    engine, _ = qwen
    params = engine.default_params()
    assert (params.do_sample, params.temperature, params.top_p, params.top_k, params.repetition_penalty) == \
        (True, 0.7, 0.8, 20, 1.05)


def test_it_chats_through_the_same_path_and_streams_the_greedy_answer(qwen):
    engine, _ = qwen
    loaded = engine.backend.loaded
    stream = engine.chat(CONVERSATION, GenerationParams(max_new_tokens=30, ignore_eos=True))
    text = stream.text()
    enc = encode_prompt(loaded.tokenizer, CONVERSATION, "cpu")
    out = loaded.model.generate(**enc, max_new_tokens=30, min_new_tokens=30, do_sample=False, pad_token_id=0,
                                repetition_penalty=1.0, top_k=None, top_p=None, temperature=None)
    assert text == loaded.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert stream.result.new_tokens == 30
