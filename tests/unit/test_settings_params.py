"""Settings come from the environment; generation parameters are validated in one object."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat_engine.params import GenerationParams, model_defaults
from common.errors import InvalidParameterError, MoEChatError
from common.settings import Settings


def test_settings_from_environment():
    s = Settings.from_env({"MOE_CHAT_CACHE_DIR": "/root/autodl-tmp", "MOE_CHAT_MAX_NEW_TOKENS": "64",
                           "MOE_CHAT_STREAM_INTERVAL_S": "0.1", "MOE_CHAT_DEFAULT_MODEL": "demo-moe"})
    assert s.cache_dir == Path("/root/autodl-tmp") and s.max_new_tokens == 64
    assert s.stream_interval_s == 0.1 and s.default_model == "demo-moe"
    assert Settings.from_env({}).cache_dir == Settings().cache_dir


@pytest.mark.parametrize("env, message", [
    ({"MOE_CHAT_MAX_NEW_TOKENS": "lots"}, "MOE_CHAT_MAX_NEW_TOKENS='lots' is not a valid int"),
    ({"MOE_CHAT_DEVICE": "tpu"}, "must be auto, cpu or cuda"),
    ({"MOE_CHAT_TRUSTED_PROXIES": "10.0.0.1, my-proxy"}, "Give addresses or networks separated by commas"),
])
def test_bad_settings_are_refused(env, message):
    with pytest.raises(MoEChatError, match=message):
        Settings.from_env(env)


def test_params_validation_and_unknown_names():
    assert GenerationParams.from_mapping({"temperature": 0.5}).temperature == 0.5
    with pytest.raises(InvalidParameterError, match="Unknown generation parameters \\['temprature'\\]"):
        GenerationParams.from_mapping({"temprature": 0.5})
    for bad in ({"top_p": 0}, {"temperature": -1}, {"max_new_tokens": 0}, {"top_k": -2}):
        with pytest.raises(InvalidParameterError):
            GenerationParams.from_mapping(bad)


def test_defaults_come_from_generation_config_then_registry_row():
    qwen_generation_config = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                              "repetition_penalty": 1.05, "eos_token_id": [151645, 151643], "pad_token_id": 151643}
    params = model_defaults(qwen_generation_config, {"top_p": 0.9}, max_new_tokens=512)
    assert (params.do_sample, params.temperature, params.top_p, params.top_k, params.repetition_penalty,
            params.max_new_tokens) == (True, 0.7, 0.9, 20, 1.05, 512)
    assert model_defaults({"max_new_tokens": 128}, {}, max_new_tokens=512).max_new_tokens == 128
