"""Streaming: same text as a plain greedy decode, errors surface, stop is prompt, no warnings."""

from __future__ import annotations

import logging
import threading
import time
import warnings

import pytest

from chat_engine.params import GenerationParams
from chat_engine.prompt import encode_prompt
from common.errors import GenerationError, GenerationTimeout
from tests.support.helpers import KNOWN_ANSWERS

STORY = [{"role": "user", "content": "Tell me a story."}]


def plain_greedy(loaded, messages, max_new_tokens, ignore_eos=False):
    model, tok = loaded.model, loaded.tokenizer
    enc = encode_prompt(tok, messages, device=model.device)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                         min_new_tokens=max_new_tokens if ignore_eos else None)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_streamed_text_equals_plain_greedy_decode(demo_engine):
    loaded = demo_engine.backend.loaded
    stream = demo_engine.chat(STORY, GenerationParams(max_new_tokens=200))
    chunks = list(stream)
    assert len(chunks) > 3  # it really streamed, in several pieces
    assert "".join(chunks) == plain_greedy(loaded, STORY, 200) == KNOWN_ANSWERS["Tell me a story."]
    assert stream.result.finish_reason == "eos"


def test_streamed_text_equals_greedy_for_arbitrary_tokens(settings, registry):
    """An untrained model emits arbitrary byte-level tokens; the stream must still decode identically."""
    from chat_engine.engine import Engine

    engine = Engine(settings)
    engine.load(registry.get("tiny-random-moe"))
    params = GenerationParams(max_new_tokens=300, ignore_eos=True)
    stream = engine.chat(STORY, params)
    text = stream.text()
    assert text == plain_greedy(engine.backend.loaded, STORY, 300, ignore_eos=True)
    assert stream.result.new_tokens == 300 and stream.result.finish_reason == "length"
    engine.close()


def test_exception_inside_generate_reaches_the_caller(demo_engine):
    model = demo_engine.backend.loaded.model
    calls = {"n": 0}

    def fail_on_fifth_step(module, args, output):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("device lost")

    handle = model.register_forward_hook(fail_on_fifth_step)
    try:
        stream = demo_engine.chat(STORY)
        received = []
        started = time.perf_counter()
        with pytest.raises(GenerationError, match="device lost"):
            for chunk in stream:
                received.append(chunk)
        assert time.perf_counter() - started < 2.0
        assert stream.result.finish_reason == "error"
    finally:
        handle.remove()
    assert stream.join(timeout=1.0)
    # the model stays usable afterwards
    assert demo_engine.chat([{"role": "user", "content": "Hello"}]).text() == KNOWN_ANSWERS["Hello"]


def test_a_stalled_generation_times_out_instead_of_hanging(settings, registry):
    from dataclasses import replace

    from chat_engine.engine import Engine

    engine = Engine(replace(settings, stall_timeout_s=0.5))
    engine.load(registry.get("demo-moe"))
    model = engine.backend.loaded.model
    handle = model.register_forward_hook(lambda *a: time.sleep(3.0))
    try:
        started = time.perf_counter()
        with pytest.raises(GenerationTimeout):
            engine.chat(STORY).text()
        assert time.perf_counter() - started < 2.5
    finally:
        handle.remove()
        engine.close()


def test_stop_event_ends_generation_after_at_most_one_more_token(demo_engine):
    stop = threading.Event()
    stream = demo_engine.chat(STORY, GenerationParams(max_new_tokens=1500, ignore_eos=True), stop=stop)
    received = [next(stream), next(stream)]
    stop.set()
    tokens_at_stop = stream.new_tokens
    received += list(stream)
    assert stream.result.finish_reason == "stopped"
    assert stream.result.new_tokens <= tokens_at_stop + 1
    assert stream.result.new_tokens < 100
    assert "".join(received) == KNOWN_ANSWERS["Tell me a story."][: len("".join(received))]


def test_a_normal_chat_logs_no_warnings(demo_engine, caplog):
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        demo_engine.chat([{"role": "user", "content": "Who are you?"}]).text()
        demo_engine.chat(STORY, GenerationParams(max_new_tokens=50, do_sample=True, temperature=0.7, top_p=0.9,
                                                 top_k=20, seed=3)).text()
    assert [r.getMessage() for r in caplog.records] == []
    assert [str(w.message) for w in caught] == []


def test_sampling_with_a_seed_is_reproducible(demo_engine):
    params = GenerationParams(max_new_tokens=40, do_sample=True, temperature=1.5, seed=7)
    assert demo_engine.chat(STORY, params).text() == demo_engine.chat(STORY, params).text()
