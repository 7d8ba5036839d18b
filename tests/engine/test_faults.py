"""Damaged checkpoints and broken generations: each is explained, and the model already loaded keeps answering."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from chat_engine.engine import Engine
from chat_engine.params import GenerationParams
from common.errors import GenerationError, ModelLoadError
from model_loader.checkpoint_check import verify_checkpoint
from model_loader.registry import ModelSpec
from tests.support.helpers import KNOWN_ANSWERS, break_tokenizer, delete_a_shard, truncate_last_shard


def damaged_copy(source, tmp_path, damage) -> ModelSpec:
    folder = tmp_path / "damaged"
    shutil.copytree(source, folder)
    damage(folder)
    return ModelSpec(id="damaged", name="Damaged", source="local", path=folder)


def junk_single_file(folder):
    (folder / "model.safetensors").write_bytes(b"<html>503 Service Unavailable</html>")


FAULTS = {
    "truncated shard": ("sharded", truncate_last_shard, r"model-\d{5}-of-\d{5}\.safetensors .* is damaged: it is cut "
                        r"short: [\d,]+ of [\d,]+ bytes\. Delete it and press Load again"),
    "missing shard": ("sharded", delete_a_shard, r"1 of the \d+ weight files listed in model\.safetensors\.index\.json "
                      r"are missing .* press Load again to fetch them"),
    "broken tokenizer": ("single", break_tokenizer, r"The tokenizer of Damaged .* failed to load .* delete them and "
                         r"press Load again"),
    "junk weights": ("single", junk_single_file, r"model\.safetensors .* is damaged: its header is unreadable"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_damaged_checkpoint_is_refused_and_the_loaded_model_keeps_serving(
        fault, demo_engine, sharded_model_dir, random_model_dir, tmp_path):
    layout, damage, message = FAULTS[fault]
    spec = damaged_copy(sharded_model_dir if layout == "sharded" else random_model_dir, tmp_path, damage)
    with pytest.raises(ModelLoadError, match=message):
        demo_engine.load(spec)
    status = demo_engine.status()
    assert status.state == "ready" and status.model_id == "demo-moe", "the loaded model was dropped for nothing"
    assert demo_engine.chat([{"role": "user", "content": "Hello"}]).text() == KNOWN_ANSWERS["Hello"]


def test_intact_checkpoints_pass_the_check(sharded_model_dir, random_model_dir):
    from tests.support.helpers import DEMO_DIR

    for folder in (sharded_model_dir, random_model_dir, DEMO_DIR):
        verify_checkpoint(folder)


def test_a_truncated_torch_bin_shard_is_found(tmp_path):
    from tests.support.xverse_checkpoint import build_tiny_xverse

    folder = build_tiny_xverse(tmp_path / "xverse")
    verify_checkpoint(folder)  # the real XVERSE layout: .bin shards and their index
    shard = sorted(folder.glob("pytorch_model-*.bin"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match=rf"{shard.name} .* is damaged: it is not a complete archive"):
        verify_checkpoint(folder)


def test_a_generation_that_raises_is_explained_and_the_next_one_works(demo_engine):
    model = demo_engine.backend.loaded.model
    calls = {"n": 0}

    def fail_once(module, args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED")

    handle = model.model.layers[0].register_forward_pre_hook(fail_once)
    try:
        stream = demo_engine.chat([{"role": "user", "content": "Tell me a story."}])
        with pytest.raises(GenerationError, match=r"CUBLAS_STATUS_EXECUTION_FAILED.*conversation is kept; try again"):
            stream.text()
        assert stream.result.finish_reason == "error"
    finally:
        handle.remove()
    assert demo_engine.chat([{"role": "user", "content": "Hello"}]).text() == KNOWN_ANSWERS["Hello"]


def test_out_of_memory_while_generating_is_explained_and_the_next_one_works(demo_engine):
    import torch

    model = demo_engine.backend.loaded.model

    def out_of_memory(module, args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = model.model.layers[0].register_forward_pre_hook(out_of_memory)
    try:
        with pytest.raises(GenerationError, match=r"Out of GPU memory while generating\. The conversation is kept: "
                                                  r"lower 'max new tokens'"):
            demo_engine.chat([{"role": "user", "content": "Hello"}]).text()
    finally:
        handle.remove()
    assert demo_engine.chat([{"role": "user", "content": "Hello"}]).text() == KNOWN_ANSWERS["Hello"]


def test_a_switch_stops_every_session_with_the_reason(settings, registry):
    engine = Engine(settings)
    engine.load(registry.get("tiny-random-moe"))
    long = GenerationParams(max_new_tokens=1900, ignore_eos=True)
    running = engine.chat([{"role": "user", "content": "Hi"}], long, owner="a")
    waiting = engine.chat([{"role": "user", "content": "Hi"}], long, owner="b")  # one slot: this one queues
    deadline = time.monotonic() + 10
    while not (running.new_tokens and waiting.queue_position == 1):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    texts = {}
    readers = [threading.Thread(target=lambda s=s, k=k: texts.__setitem__(k, s.text())) for k, s in
               (("a", running), ("b", waiting))]
    for reader in readers:
        reader.start()
    engine.load(registry.get("demo-moe"))  # returns only once both have ended and the old weights are gone
    for reader in readers:
        reader.join(timeout=10)
    for stream in (running, waiting):
        assert stream.join(timeout=0), "a generation outlived the model it ran on"
        assert stream.result.finish_reason == "stopped"
        assert stream.interruption == "Stopped: the model is being switched to Demo MoE (tiny, bundled)."
    assert 0 < running.result.new_tokens < 1900 and waiting.result.new_tokens == 0
    assert engine.chat([{"role": "user", "content": "Hello"}]).text() == KNOWN_ANSWERS["Hello"]
    own = engine.chat([{"role": "user", "content": "Tell me a story."}], long, owner="c")
    own.cancel()  # stopped by its own reader: no reason to give
    own.text()
    assert own.interruption is None
    engine.close()
