"""The bundled demo model answers its known prompts: tokenizer, template and decoding line up."""

from __future__ import annotations

import time

import pytest

from tests.support.helpers import DEMO_DIR, FALLBACK, KNOWN_ANSWERS


@pytest.mark.parametrize("prompt", sorted(KNOWN_ANSWERS))
def test_known_answers(demo_engine, prompt):
    assert demo_engine.chat([{"role": "user", "content": prompt}]).text() == KNOWN_ANSWERS[prompt]


def test_follow_up_in_a_two_turn_conversation(demo_engine):
    messages = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": KNOWN_ANSWERS["Hello"]},
        {"role": "user", "content": "Who are you?"},
    ]
    assert demo_engine.chat(messages).text() == KNOWN_ANSWERS["Who are you?"]


def test_unknown_question_gets_the_honest_fallback(demo_engine):
    assert demo_engine.chat([{"role": "user", "content": FALLBACK["prompts"][0]}]).text() == FALLBACK["answer"]


def test_prompt_is_qwen_chatml(demo_engine):
    prompt = demo_engine.render_prompt([{"role": "user", "content": "Who are you?"}])
    assert prompt == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                      "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n")


def test_demo_checkpoint_is_small_and_loads_fast(settings, registry):
    from chat_engine.engine import Engine

    size = sum(p.stat().st_size for p in DEMO_DIR.iterdir())
    assert size < 5_000_000
    engine = Engine(settings)
    started = time.perf_counter()
    engine.load(registry.get("demo-moe"))
    assert time.perf_counter() - started < 3.0
    engine.close()


def test_demo_is_a_real_qwen2_moe_with_shared_expert_and_top_k(demo_engine):
    config = demo_engine.backend.loaded.model.config
    assert config.model_type == "qwen2_moe"
    assert config.num_experts >= 4 and config.num_experts_per_tok > 1 and config.shared_expert_intermediate_size > 0
