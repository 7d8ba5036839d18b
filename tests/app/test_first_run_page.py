"""A first run on a GPU box whose driver torch cannot use: the page says why and what to install, refuses to put a
GPU model on the CPU, and the demo keeps answering; flash-attn on a GPU that cannot run it is said before a load."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.app.conftest import chat_messages, open_page, run_until
from tests.support.helpers import KNOWN_ANSWERS

REASON = "torch 2.14.1 is built for CUDA 13.0; this driver (550.54.14) supports up to CUDA 12.4"
COMMAND = "pip install torch==2.6.0 --index-url https://download.pytorch.org/whl/cu124"


@pytest.fixture
def driver_torch_cannot_use(monkeypatch, db_path):
    """The probe's two sources described: nvidia-smi shows two 4090s on a CUDA 12.4 driver; torch is the CUDA 13.0
    build of PyPI, which sees none of them (as torch says on such a driver)."""
    from model_loader import devices
    from model_loader.cuda_builds import TorchFacts
    from model_loader.gpu_driver import DriverFacts, DriverGpu

    gpus = tuple(DriverGpu(i, "NVIDIA GeForce RTX 4090", 24564 * 2**20, (8, 9)) for i in range(2))
    monkeypatch.setattr(devices, "probe_driver", lambda: DriverFacts("550.54.14", (12, 4), gpus, "nvidia-smi"))
    torch_says = "CUDA initialization: The NVIDIA driver on your system is too old (found version 12040)."
    monkeypatch.setattr(devices, "probe_torch", lambda: (TorchFacts("2.14.1+cu130", "13.0", 0, torch_says), ()))
    monkeypatch.setenv("MOE_CHAT_DEVICE", "auto")  # the tests' default is cpu, which would allow the CPU on purpose
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def sidebar_errors(at: AppTest) -> list[str]:
    return [e.value for e in at.sidebar.error]


def test_the_sidebar_says_why_the_gpus_are_unused_and_what_to_install(driver_torch_cannot_use):
    at = open_page()
    assert not at.exception, at.exception
    first = sidebar_errors(at)[0]  # above the model picker, before anything else fails
    assert REASON in first and "The GPUs are not in use" in first
    assert at.sidebar.code[0].value == COMMAND
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "torch cannot use this machine's GPUs" in captions and "No CUDA GPU" not in captions


def test_a_gpu_model_is_not_loaded_on_the_cpu_instead_and_the_demo_keeps_answering(driver_torch_cannot_use):
    at = open_page()
    run_until(at, "Demo MoE (tiny, bundled)** ready")
    at.selectbox(key="model_choice").select("qwen1.5-moe-a2.7b-chat").run()
    at.button(key="load_model").click().run()
    run_until(at, "needs the GPUs, and torch cannot use them")
    refusal = " ".join(sidebar_errors(at))
    assert REASON in refusal and COMMAND in refusal

    at.chat_input[0].set_value("Hello").run()
    assert chat_messages(at)[-1] == ("assistant", KNOWN_ANSWERS["Hello"])


def turing_options() -> None:
    from common.settings import Settings
    from components import load_panel
    from model_loader.devices import DeviceFacts, Gpu
    from model_loader.placement import plan_placement

    facts = DeviceFacts(gpus=(Gpu(0, "Tesla T4", (7, 5), 16 * 2**30),), flash_attn_installed=True)
    load_panel.render_options(facts, lambda opts: plan_placement(facts, Settings(), opts))


def broken_wheel_options() -> None:
    from common.settings import Settings
    from components import load_panel
    from model_loader.devices import DeviceFacts, Gpu
    from model_loader.placement import plan_placement

    facts = DeviceFacts(gpus=(Gpu(0, "NVIDIA A100", (8, 0), 80 * 2**30),),
                        flash_attn_error="ImportError: flash_attn_2_cuda: undefined symbol: _ZN3c105ErrorC2E")
    load_panel.render_options(facts, lambda opts: plan_placement(facts, Settings(), opts))


def test_flash_attn_on_a_turing_gpu_is_said_before_the_load_and_refused_when_asked_for():
    at = AppTest.from_function(turing_options).run()
    assert "attention **sdpa** (flash-attention 2 needs compute capability >= 8.0" in " ".join(
        c.value for c in at.caption)
    at.selectbox(key="opt_attention").select("flash_attention_2").run()
    assert any("needs GPUs of compute capability 8.0 or newer" in e.value for e in at.error)


def test_a_flash_attn_wheel_that_does_not_load_is_said_before_the_load():
    at = AppTest.from_function(broken_wheel_options).run()
    assert "flash-attn is installed but does not load (ImportError: flash_attn_2_cuda" in " ".join(
        c.value for c in at.caption)
    at.selectbox(key="opt_attention").select("flash_attention_2").run()
    assert any("install the wheel built for this torch" in e.value for e in at.error)
