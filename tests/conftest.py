"""Shared fixtures: every cache and download folder points at a temp dir; tiny checkpoints are built once."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest

from tests.support.helpers import build_random_qwen2_moe, write_models_toml
from tests.support.hub_server import HubServer, demo_repo

RANDOM_MODEL_ID = "tiny-random-moe"
RANDOM_MODEL_NAME = "Tiny random MoE"
XVERSE_MODEL_ID = "tiny-xverse"
MS_REPO, HF_REPO = "tester/demo-moe", "tester/demo-moe-big"
BIG = random.Random(0).randbytes(12 << 20)  # above huggingface_hub's 10 MiB read size, so its resume shows
LOOPBACK = ("127.0.0.1", "localhost", "::1")


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
        "XDG_DATA_HOME": str(home / "data"),
        "MOE_CHAT_DEVICE": "cpu",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    })
    for key in [k for k in os.environ if k.startswith("MOE_CHAT_") and k != "MOE_CHAT_DEVICE"]:
        del os.environ[key]
    # the tests' model folders live under pytest's temporary root: the folder box may take them
    os.environ["MOE_CHAT_MODEL_ROOTS"] = str(tmp_path_factory.getbasetemp())
    # torch is imported only by the tests that need it; it takes its thread count from OMP_NUM_THREADS then.
    yield home
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_qwen2_moe(tmp_path_factory.mktemp("tiny-random-moe"))


@pytest.fixture(scope="session")
def sharded_model_dir(tmp_path_factory: pytest.TempPathFactory, random_model_dir: Path) -> Path:
    """The tiny random model saved as several safetensors shards with an index, as big checkpoints ship."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(random_model_dir, dtype=torch.float32)
    out = tmp_path_factory.mktemp("sharded")
    model.save_pretrained(out, max_shard_size="1MB")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(random_model_dir / name, out / name)
    assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("model-*.safetensors"))) >= 3
    return out


@pytest.fixture(scope="session")
def models_file(tmp_path_factory: pytest.TempPathFactory, random_model_dir: Path) -> Path:
    """A user models.toml adding the tiny random model beside the built-in rows."""
    from tests.support.xverse_checkpoint import build_tiny_xverse

    path = write_models_toml(tmp_path_factory.mktemp("cfg") / "models.toml", RANDOM_MODEL_ID,
                             RANDOM_MODEL_NAME, random_model_dir)
    xverse = build_tiny_xverse(tmp_path_factory.mktemp("tiny-xverse"))
    with path.open("a") as f:  # the tiny XVERSE as a base model with the registry's XVERSE chat format
        f.write(f'\n[[models]]\nid = "{XVERSE_MODEL_ID}"\nname = "Tiny XVERSE"\nsource = "local"\n'
                f'path = "{xverse}"\nkind = "base"\nchat_format = "xverse-moe"\n')
    return path


@pytest.fixture(scope="session")
def settings(models_file: Path):
    from common.settings import Settings

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


@pytest.fixture(autouse=True)
def _settings_read_per_test():
    """The app resolves its settings once per process; each test sets its own environment, so each reads them anew."""
    from web import config

    config.reset()
    yield
    config.reset()


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch) -> list[object]:
    """Connections outside loopback fail at once; the list records every connection attempted."""
    attempts: list[object] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address: object) -> None:
        attempts.append(address)
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            raise OSError(f"tests may not connect to {address}")
        return real_connect(sock, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        if isinstance(host, str) and host not in LOOPBACK:
            raise socket.gaierror(f"tests may not resolve {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The local hub, with both clients pointed at it and every client folder in tmp_path."""
    import huggingface_hub.constants
    import modelscope_hub.config

    server = HubServer([demo_repo(MS_REPO), demo_repo(HF_REPO, weights=BIG)]).start()
    for name, value in {"MODELSCOPE_ENDPOINT": server.url, "HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0",
                        "MODELSCOPE_HOME": str(tmp_path / "modelscope-home"), "HF_HOME": str(tmp_path / "hf-home"),
                        "HF_HUB_DISABLE_TELEMETRY": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("MODELSCOPE_API_TOKEN", "HF_TOKEN", "MODELSCOPE_DOMAIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(modelscope_hub.config, "_default_config", None)  # rebuilt from the variables above
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tserve(tmp_path_factory):
    """A real `transformers serve` on the demo model (the remote backend's tests)."""
    from tests.support.model_servers import TransformersServe

    server = TransformersServe(tmp_path_factory.mktemp("transformers-serve")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vllm(tmp_path_factory):
    """A real vLLM (its CPU build, from .venv-vllm) on a widened copy of the demo that computes the same function."""
    from tests.support.helpers import DEMO_DIR
    from tests.support.model_servers import VLLM_REQUIRED, VllmServer, vllm_available
    from tests.support.widen_demo import widen_demo

    if not vllm_available():
        if VLLM_REQUIRED:  # scripts/test.sh installs it: its absence is a failure there
            pytest.fail("vLLM's venv is missing: run `bash scripts/test.sh` (it installs .venv-vllm)")
        pytest.skip("vLLM's CPU build is not installed (bash scripts/test.sh installs it into .venv-vllm)")
    home = tmp_path_factory.mktemp("vllm")
    server = VllmServer(home, widen_demo(DEMO_DIR, home / "demo-widened")).start()
    yield server
    server.stop()



@pytest.fixture
def small_disk(tmp_path):
    """A real filesystem of 8 MiB (a tmpfs mounted for the test; skipped where mounting is not allowed)."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip() or 'not root'})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(folder: Path, leave_bytes: int) -> None:
    """Write a ballast file into `folder` so that about `leave_bytes` stay free on its filesystem."""
    import shutil

    ballast = folder / "ballast"
    extra = shutil.disk_usage(folder).free - leave_bytes
    with ballast.open("ab") as out:
        out.write(b"\0" * max(0, extra))
