"""Gathers the doctor's facts from this machine; torch is imported only where an NVIDIA driver shows."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
import sys
import urllib.request

from common.errors import one_line
from common.settings import Settings, cache_dir_origin
from doctor.facts import Download, MachineFacts, Package, Port
from model_loader.devices import DeviceFacts, flash_attn_import_error, probe_torch, torch_build
from model_loader.disk import disk_room
from model_loader.download import is_downloaded
from model_loader.gpu_driver import probe_driver
from model_loader.registry import load_registry

HUB_SOURCES = ("modelscope", "huggingface")


def version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def probe_flash_attn(has_gpu: bool) -> Package:
    version = version_of("flash-attn") or version_of("flash_attn")
    if version is None or not has_gpu:  # without a GPU its CUDA extension cannot load anyway: not imported
        return Package(version)
    error = flash_attn_import_error()
    return Package(version, error=error, cuda=not error)


def probe_bitsandbytes(has_gpu: bool) -> Package:
    version = version_of("bitsandbytes")
    if version is None or not has_gpu:  # its import costs seconds (torch) and says nothing useful without a GPU
        return Package(version)
    try:
        from bitsandbytes import cextension
    except Exception as exc:
        return Package(version, error=one_line(exc))
    return Package(version, cuda=getattr(cextension, "BNB_BACKEND", "") == "CUDA")


def probe_port(port: int, host: str = "127.0.0.1") -> Port:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        if sock.connect_ex((host, port)) != 0:
            return Port(port, "free")
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/_stcore/health", timeout=2) as response:
            return Port(port, "streamlit" if response.read(16).strip() == b"ok" else "taken")
    except Exception:
        return Port(port, "taken")


def configured_port(default: int = 6006) -> int:
    """server.port of .streamlit/config.toml, as `streamlit run app.py` will use it."""
    import tomllib
    from pathlib import Path

    try:
        config = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return default
    return int(config.get("server", {}).get("port", default))


def gather(settings: Settings, port: int | None = None) -> MachineFacts:
    from model_loader.memory import snapshot
    from planner.facts_cache import facts_cache_dir
    from planner.planning import plan

    driver = probe_driver()
    torch, gpus = (probe_torch() if driver.present else (torch_build(), ()))
    devices = DeviceFacts(gpus=gpus, driver=driver, torch=torch, visible_env=os.environ.get("CUDA_VISIBLE_DEVICES"))
    registry = load_registry(settings.models_file)
    in_process = tuple(s for s in registry.specs if not s.remote)
    plans = facts_cache_dir(settings)
    downloads = []
    for spec in in_process:
        if spec.source in HUB_SOURCES and spec.config is not None:
            downloads.append(Download(spec.name, plan(spec, "bf16", (), cache_dir=plans).weight_bytes,
                                      is_downloaded(spec, settings)))
    return MachineFacts(
        python=tuple(sys.version_info[:3]), devices=devices,
        flash_attn=probe_flash_attn(bool(gpus)), bitsandbytes=probe_bitsandbytes(bool(gpus)),
        cache_dir=settings.cache_dir, cache_origin=cache_dir_origin(), disk=disk_room(settings.cache_dir),
        port=probe_port(port or configured_port()), ram_bytes=snapshot().system_total_bytes,
        downloads=tuple(downloads), specs=tuple(s for s in in_process if s.config is not None), plan_cache=plans)
