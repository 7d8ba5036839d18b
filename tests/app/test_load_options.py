"""The Load options on a (described) GPU machine: what 4-bit says it will do, and what it refuses."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def options_panel() -> None:
    import streamlit as st

    from common.settings import Settings
    from components import load_panel
    from model_loader.devices import DeviceFacts, Gpu
    from model_loader.placement import plan_placement

    facts = DeviceFacts(gpus=(Gpu(0, "NVIDIA GeForce RTX 4090", (8, 9), 24 * 2**30),), bitsandbytes_installed=True)
    options = load_panel.render_options(facts, lambda opts: plan_placement(facts, Settings(), opts))
    st.write(f"options: {options}")


def captions(app: AppTest) -> str:
    return " ".join(c.value for c in app.caption)


def test_4bit_on_one_gpu_quantizes_each_expert():
    app = AppTest.from_function(options_panel).run()
    assert "both seed models fit one 24 GB GPU" in app.selectbox(key="opt_quantization").help
    app.selectbox(key="opt_quantization").select("4bit").run()
    assert "experts one 4-bit Linear per expert for Qwen2-MoE and XVERSE-MoE" in captions(app)
    assert "quantization='4bit'" in app.markdown[-1].value


def test_an_experts_kernel_with_4bit_is_refused_with_the_fix():
    app = AppTest.from_function(options_panel).run()
    app.selectbox(key="opt_experts").select("batched_mm").run()
    app.selectbox(key="opt_quantization").select("4bit").run()
    assert any("set experts to auto" in e.value for e in app.error)
    assert "options: None" in app.markdown[-1].value
