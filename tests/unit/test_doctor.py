"""`python -m doctor`: its lines and exit code on this machine, and on described ones (a driver torch cannot use,
an old GPU with flash-attn, a small disk, a taken port)."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common.settings import Settings
from doctor.checks import run_checks
from doctor.cli import main
from doctor.facts import Download, MachineFacts, Package, Port
from doctor.probe import probe_port
from model_loader.cuda_builds import TorchFacts
from model_loader.devices import DeviceFacts, Gpu
from model_loader.disk import DiskRoom
from model_loader.gpu_driver import DriverFacts, DriverGpu
from model_loader.registry import load_registry
from planner.gpus import might_have_gpus
from tests.support.helpers import ROOT

GIB = 2**30
QWEN = "Qwen1.5-MoE-A2.7B-Chat"


def driver(*gpus: tuple[str, tuple[int, int]], cuda=(12, 4)) -> DriverFacts:
    return DriverFacts(version="550.54.14", cuda=cuda, source="nvidia-smi",
                       gpus=tuple(DriverGpu(i, name, 24 * GIB, cap) for i, (name, cap) in enumerate(gpus)))


def machine(devices: DeviceFacts = DeviceFacts(torch=TorchFacts("2.13.0+cpu")), free_gb: float = 500,
            **changes) -> MachineFacts:
    specs = tuple(s for s in load_registry(Settings(models_file=Path("/nonexistent")).models_file).specs
                  if not s.remote)
    facts = MachineFacts(python=(3, 11, 7), devices=devices, flash_attn=Package(), bitsandbytes=Package(),
                         cache_dir=Path("/root/.cache/modelscope"), cache_origin="the default",
                         disk=DiskRoom(Path("/root/.cache/modelscope"), int(free_gb * 1e9), int(1000e9)),
                         port=Port(6006, "free"), ram_bytes=64 * GIB,
                         downloads=(Download(QWEN, int(28.6e9), False),), specs=specs)
    return dataclasses.replace(facts, **changes)


def lines(facts: MachineFacts, name: str) -> list[str]:
    return [c.line() for c in run_checks(facts) if c.name == name]


def test_on_this_machine_it_answers_in_seconds_without_importing_torch(tmp_path):
    """The real probe, as a user runs it (torch is imported only where a GPU driver shows)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    code = (f"import sys; from doctor.cli import main; rc = main(['--port', '{free_port}']); "
            "print('torch imported:', 'torch' in sys.modules); sys.exit(rc)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MOE_CHAT_CACHE_DIR": str(tmp_path / "cache")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - started
    out = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(line.split()[0] in ("ok", "warn", "fail") for line in out[:-2]), out
    assert out[0].startswith("ok    python") and any(line.startswith("ok    torch") for line in out)
    assert any(f"{tmp_path / 'cache'} (set by MOE_CHAT_CACHE_DIR)" in line for line in out)
    assert any(line.startswith("ok    port") and str(free_port) in line for line in out)
    assert any(line.startswith("ok    fit") and "Demo MoE" in line for line in out)
    if not might_have_gpus():
        assert out[-1] == "torch imported: False"
        assert any(line.startswith("warn  driver") and "no NVIDIA driver" in line for line in out)
    assert seconds < 10, f"the doctor took {seconds:.1f} s"


def test_a_driver_with_gpus_torch_cannot_use_fails_with_the_build_to_install(capsys):
    devices = DeviceFacts(driver=driver(("NVIDIA GeForce RTX 4090", (8, 9)), ("NVIDIA GeForce RTX 4090", (8, 9))),
                          torch=TorchFacts("2.14.1+cu130", "13.0", visible=0))
    facts = machine(devices)
    assert lines(facts, "torch-gpus") == [
        "fail  torch-gpus  torch 2.14.1 is built for CUDA 13.0; this driver (550.54.14) supports up to CUDA 12.4 -> "
        "Install the torch build for this driver (or update the driver): "
        "pip install torch==2.6.0 --index-url https://download.pytorch.org/whl/cu124"]
    assert lines(facts, "gpu 1") == ["warn  gpu 1       NVIDIA GeForce RTX 4090, 24.0 GiB, compute capability 8.9, "
                                     "not usable by torch (see torch-gpus)"]
    fit = " ".join(lines(facts, "fit"))
    assert f"{QWEN} on 2 x 24.0 GiB (once torch can use them): bf16 fits, 4-bit fits" in fit
    assert main([], facts=facts) == 1
    assert "1 failed" in capsys.readouterr().out.splitlines()[-1]


def test_a_cpu_build_on_a_gpu_box_fails_and_a_matching_build_passes():
    gpus = driver(("NVIDIA A100-SXM4-80GB", (8, 0)), cuda=(13, 0))
    cpu_build = machine(DeviceFacts(driver=gpus, torch=TorchFacts("2.13.0+cpu", None, visible=0)))
    assert "a CPU-only build" in lines(cpu_build, "torch-gpus")[0] and lines(cpu_build, "torch-gpus")[0].endswith(
        "pip install torch==2.14.1 --index-url https://download.pytorch.org/whl/cu130")
    good = machine(DeviceFacts(gpus=(Gpu(0, "NVIDIA A100-SXM4-80GB", (8, 0), 80 * GIB),), driver=gpus,
                               torch=TorchFacts("2.14.1+cu130", "13.0", visible=1)))
    assert lines(good, "torch-gpus") == ["ok    torch-gpus  torch uses all 1 GPU(s) the driver shows"]
    assert main([], facts=good) == 0


def test_flash_attn_on_a_turing_gpu_warns_that_sdpa_is_used():
    t4 = DeviceFacts(gpus=(Gpu(0, "Tesla T4", (7, 5), 16 * GIB),), driver=driver(("Tesla T4", (7, 5))),
                     torch=TorchFacts("2.6.0+cu124", "12.4", visible=1))
    facts = machine(t4, flash_attn=Package("2.8.3", cuda=True))
    assert lines(facts, "flash-attn") == [
        "warn  flash-attn  2.8.3 installed, but flash-attention 2 needs compute capability 8.0+ (Ampere) and GPU 0 "
        "(Tesla T4) is 7.5 -> the app uses sdpa on it; pip uninstall flash-attn removes the unused package"]


def test_a_flash_attn_wheel_for_another_torch_names_the_wheel_to_get():
    a100 = DeviceFacts(gpus=(Gpu(0, "NVIDIA A100", (8, 0), 80 * GIB),), driver=driver(("NVIDIA A100", (8, 0))),
                       torch=TorchFacts("2.6.0+cu124", "12.4", visible=1))
    facts = machine(a100, flash_attn=Package("2.8.3", error="ImportError: undefined symbol: _ZN3c105ErrorC2E"))
    line = lines(facts, "flash-attn")[0]
    assert line.startswith("warn") and "torch 2.6.0, CUDA 12.4 and Python 3.11" in line
    assert lines(machine(), "flash-attn")[0].startswith("ok    flash-attn  not installed")


def test_a_download_larger_than_the_free_disk_warns_with_where_to_put_it():
    line = lines(machine(free_gb=21.3), "download")[0]
    assert line.startswith(f"warn  download    {QWEN}: 28.6 GB, does not fit in 21.3 GB free")
    assert "MOE_CHAT_CACHE_DIR" in line and "/root/autodl-tmp" in line
    assert lines(machine(free_gb=40), "download") == [f"ok    download    {QWEN}: 28.6 GB, fits"]


def test_one_24gib_gpu_fits_the_seeds_in_4bit_only():
    one = DeviceFacts(gpus=(Gpu(0, "NVIDIA GeForce RTX 4090", (8, 9), 24 * GIB),),
                      driver=driver(("NVIDIA GeForce RTX 4090", (8, 9))), torch=TorchFacts("2.6.0", "12.4", visible=1))
    fit = " ".join(lines(machine(one), "fit"))
    assert f"{QWEN} on 1 x 24.0 GiB: bf16 needs 8-bit, 4-bit fits" in fit
    assert "XVERSE-MoE-A4.2B-Chat on 1 x 24.0 GiB: bf16 needs 4-bit, 4-bit fits" in fit


def test_old_python_and_a_taken_port_fail():
    assert lines(machine(python=(3, 10, 12)), "python")[0].startswith("fail  python      Python 3.10.12")
    taken = lines(machine(port=Port(6006, "taken")), "port")[0]
    assert taken.startswith("fail") and "--server.port 6007" in taken


def test_the_port_probe_tells_free_taken_and_a_running_streamlit_apart():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert probe_port(port).state == "taken"
    assert probe_port(port).state == "free"

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # what streamlit answers on /_stcore/health
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert probe_port(server.server_address[1]).state == "streamlit"
    finally:
        server.shutdown()


def test_downloads_go_to_the_autodl_data_disk_when_it_exists_and_nothing_is_set(monkeypatch, tmp_path):
    from common import settings

    monkeypatch.delenv("MODELSCOPE_CACHE", raising=False)
    monkeypatch.setattr(settings, "AUTODL_DATA_DISK", tmp_path / "autodl-tmp")
    assert Settings().cache_dir == Path.home() / ".cache" / "modelscope"  # not on AutoDL
    (tmp_path / "autodl-tmp").mkdir()
    assert Settings().cache_dir == tmp_path / "autodl-tmp"
    assert settings.cache_dir_origin({}).startswith("the AutoDL data disk")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    assert Settings().cache_dir == tmp_path / "ms"
    assert settings.cache_dir_origin({"MODELSCOPE_CACHE": "x"}) == "set by MODELSCOPE_CACHE"
    assert Settings.from_env({"MOE_CHAT_CACHE_DIR": str(tmp_path / "c")}).cache_dir == tmp_path / "c"
