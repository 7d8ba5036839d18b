"""Shared fixtures: every cache and download folder points at a temp dir; tiny checkpoints are built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import build_random_qwen2_moe, write_models_toml

RANDOM_MODEL_ID = "tiny-random-moe"
RANDOM_MODEL_NAME = "Tiny random MoE"


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory):
    """No test reads the user's caches or config, and nothing can reach a hub."""
    home = tmp_path_factory.mktemp("home")
    saved = dict(os.environ)
    os.environ.update({
        "MODELSCOPE_CACHE": str(home / "modelscope"),
        "HF_HOME": str(home / "hf"),
        "HF_HUB_OFFLINE": "1",
        "XDG_CONFIG_HOME": str(home / "config"),
        "MOE_CHAT_DEVICE": "cpu",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    })
    for key in [k for k in os.environ if k.startswith("MOE_CHAT_") and k != "MOE_CHAT_DEVICE"]:
        del os.environ[key]
    import torch

    torch.set_num_threads(1)
    yield home
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_qwen2_moe(tmp_path_factory.mktemp("tiny-random-moe"))


@pytest.fixture(scope="session")
def models_file(tmp_path_factory: pytest.TempPathFactory, random_model_dir: Path) -> Path:
    """A user models.toml adding the tiny random model beside the built-in rows."""
    return write_models_toml(tmp_path_factory.mktemp("cfg") / "models.toml", RANDOM_MODEL_ID,
                             RANDOM_MODEL_NAME, random_model_dir)


@pytest.fixture(scope="session")
def settings(models_file: Path):
    from model_loader.settings import Settings

    return Settings(cache_dir=models_file.parent / "cache", models_file=models_file, device="cpu")


@pytest.fixture(scope="session")
def registry(settings):
    from model_loader.registry import load_registry

    return load_registry(settings.models_file)


@pytest.fixture(scope="session")
def demo_engine(settings, registry):
    """An engine with the demo model loaded, shared by the engine tests that do not switch models."""
    from chat_engine.engine import Engine

    engine = Engine(settings)
    engine.load(registry.get("demo-moe"))
    yield engine
    engine.close()
