"""The engine owns one model at a time: switching frees the old one, and errors are explained."""

from __future__ import annotations

import gc
import threading

import psutil
import pytest

from chat_engine.engine import Engine
from chat_engine.params import GenerationParams
from common.errors import ModelLoadError, ModelNotFoundError, ModelNotLoadedError
from model_loader.registry import ModelSpec
from tests.support.helpers import KNOWN_ANSWERS


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


@pytest.mark.slow
def test_switching_models_frees_the_previous_one(settings, registry):
    engine = Engine(settings)
    demo, other = registry.get("demo-moe"), registry.get("tiny-random-moe")
    engine.load(demo)
    engine.chat([{"role": "user", "content": "Hello"}]).text()
    after_first = rss()
    for _ in range(10):
        engine.load(other)
        assert engine.status().model_id == other.id
        engine.chat([{"role": "user", "content": "Hello"}], GenerationParams(max_new_tokens=20)).text()
        engine.load(demo)
        assert engine.chat([{"role": "user", "content": "Hello"}]).text() == KNOWN_ANSWERS["Hello"]
    growth = rss() / after_first - 1
    assert growth < 0.10, f"process memory grew {growth:.1%} over 10 switches"
    engine.close()


def test_switching_cancels_a_running_generation_first(settings, registry):
    engine = Engine(settings)
    engine.load(registry.get("demo-moe"))
    stream = engine.chat([{"role": "user", "content": "Tell me a story."}],
                         GenerationParams(max_new_tokens=2000, ignore_eos=True))
    next(stream)
    engine.load(registry.get("tiny-random-moe"))
    assert stream.join(timeout=0)  # the old generation had ended before the new model loaded
    assert stream.result is None or stream.result.finish_reason == "stopped"
    assert stream.new_tokens < 2000
    assert [t for t in threading.enumerate() if t.name == "moe-chat-generate"] == []
    engine.close()


def test_only_one_model_is_referenced_after_a_switch(settings, registry):
    import weakref

    engine = Engine(settings)
    engine.load(registry.get("demo-moe"))
    old = weakref.ref(engine.backend.loaded.model)
    engine.chat([{"role": "user", "content": "Hello"}]).text()
    engine.load(registry.get("tiny-random-moe"))
    gc.collect()
    assert old() is None, "the previous model is still referenced after the switch"
    engine.close()


def test_chat_without_a_model_says_what_to_do(settings):
    engine = Engine(settings)
    with pytest.raises(ModelNotLoadedError, match="choose one in the sidebar"):
        engine.chat([{"role": "user", "content": "Hi"}])


def test_missing_local_folder_is_a_clear_error_and_status(settings, tmp_path):
    engine = Engine(settings)
    spec = ModelSpec(id="gone", name="Gone", source="local", path=tmp_path / "nothing")
    with pytest.raises(ModelNotFoundError, match="config.json missing"):
        engine.load(spec)
    assert engine.status().state == "error"
    assert "config.json" in engine.status().message


def test_corrupt_weights_with_no_model_loaded_are_the_status(settings, random_model_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(random_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    engine = Engine(settings)
    with pytest.raises(ModelLoadError, match="model.safetensors in .*broken is damaged"):
        engine.load(ModelSpec(id="broken", name="Broken", source="local", path=broken))
    assert engine.status().state == "error" and "is damaged" in engine.status().message


def test_status_after_load_says_where_the_model_is(demo_engine):
    status = demo_engine.status()
    assert status.state == "ready" and status.info.device_summary == "cpu" and status.info.dtype == "float32"
