"""The sidebar: model picker, model status, memory panel and conversation controls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

from common.units import gib, params_b
from components import state


@dataclass(frozen=True)
class ModelChoice:
    """What the user asked for in the model picker this run."""

    spec: Any  # ModelSpec currently selected
    load: bool = False
    unload: bool = False
    added_folder: str | None = None


def render_model_picker(registry: Any, status: Any, busy: bool = False) -> ModelChoice:
    """Model selectbox, its notes, Load/Unload buttons, and a field to add a local folder."""
    st.subheader("Model")
    ids = registry.ids
    pending = st.session_state.pop(state.PENDING_CHOICE, None)
    if pending is not None:
        st.session_state[state.MODEL_CHOICE] = pending
    if st.session_state.get(state.MODEL_CHOICE) not in ids:
        st.session_state[state.MODEL_CHOICE] = ids[0]
    names = {s.id: s.name for s in registry.specs}
    model_id = st.selectbox("Model", ids, format_func=names.__getitem__, key=state.MODEL_CHOICE,
                            label_visibility="collapsed")
    spec = registry.get(model_id)
    sizes = f"{params_b(spec.total_params_b)} total, {params_b(spec.active_params_b)} active per token"
    st.caption(f"{spec.where} · {sizes}" if spec.total_params_b else spec.where)
    if spec.kind == "demo":
        st.caption(":orange-badge[Demo] " + spec.notes)
    elif spec.kind == "base":
        st.caption(":violet-badge[Base model] " + spec.notes)
    elif spec.notes:
        st.caption(spec.notes)
    is_loaded = status.state == "ready" and status.model_id == spec.id
    left, right = st.columns(2)
    label = "Reload" if is_loaded else ("Switch" if status.state == "ready" else "Load")
    load = left.button(label, key="load_model", disabled=busy or status.state == "loading",
                       type="secondary" if is_loaded else "primary", width="stretch",
                       help="Reload applies changed load options" if is_loaded else None)
    unload = right.button("Unload", key="unload_model", disabled=status.state != "ready",
                          width="stretch")
    added = None
    with st.expander("Add a local model folder"):
        folder = st.text_input("Folder with config.json", key="local_folder_input",
                               placeholder="/root/autodl-tmp/my-model")
        if st.button("Add folder", key="add_local_folder") and folder.strip():
            added = folder.strip()
    return ModelChoice(spec=spec, load=load, unload=unload, added_folder=added)


def render_status(status: Any) -> None:
    """One line for the engine's state, plus where the layers went once loaded."""
    if status.state == "ready":
        info = status.info
        parts = [f"**{status.model_name}** ready", info.dtype, info.device_summary, info.kernels]
        st.success(" · ".join(p for p in parts if p), icon=":material/check_circle:")
        for warning in info.warnings:
            st.warning(warning, icon=":material/warning:")
    elif status.state == "loading":
        st.info(status.message, icon=":material/hourglass_top:")
    elif status.state == "error":
        st.error(status.message, icon=":material/error:")
    else:
        st.info("No model loaded.", icon=":material/bedtime:")


def render_memory_panel(read: Callable[[], Any], refresh_s: float) -> None:
    """Memory readings that refresh on a timer without rerunning the page."""

    @st.fragment(run_every=refresh_s)
    def panel() -> None:
        snap = read()
        for gpu in snap.gpus:
            share = gpu.used_bytes / gpu.total_bytes if gpu.total_bytes else 0.0
            st.progress(min(share, 1.0), text=f"GPU {gpu.index} {gpu.name}: {gib(gpu.used_bytes)} / "
                                               f"{gib(gpu.total_bytes)}")
            st.caption(f"this process: {gib(gpu.allocated_bytes)} allocated, {gib(gpu.reserved_bytes)} reserved")
        if not snap.gpus:
            st.caption("No CUDA GPU: the model runs on the CPU.")
        share = snap.system_used_bytes / snap.system_total_bytes if snap.system_total_bytes else 0.0
        st.progress(min(share, 1.0), text=f"RAM: {gib(snap.system_used_bytes)} / {gib(snap.system_total_bytes)}")
        st.caption(f"this process: {gib(snap.process_rss_bytes)} resident")

    st.subheader("Memory")
    panel()
