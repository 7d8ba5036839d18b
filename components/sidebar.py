"""The sidebar: model picker, model status, memory panel and conversation controls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

from chat_engine.interface import Capabilities, EngineStatus
from common.errors import MoEChatError
from common.units import gb, gib, params_b
from components import state
from components.markdown import plain
from model_loader.registry import ADDED_SERVER_PREFIX, ModelSpec, Registry


@dataclass(frozen=True)
class ModelChoice:
    """What the user asked for in the model picker this run."""

    spec: ModelSpec  # the row currently selected
    load: bool = False
    unload: bool = False
    added_folder: str | None = None
    added_server: tuple[str, str, str] | None = None  # (address, served model, API key variable or "")


def render_gpu_problem(problem: Any) -> None:
    """The driver shows GPUs that torch cannot use: said above the model picker, with the command that fixes it."""
    if problem is None:
        return
    st.error(f"**The GPUs are not in use.** {problem.reason}. {problem.fix}{':' if problem.command else '.'}",
             icon=":material/error:")
    if problem.command:
        st.code(problem.command, language="bash")
        st.caption("Then `pip install -r requirements.txt` (it keeps that torch) and restart the app. "
                   "`python -m doctor` checks the machine.")


def render_model_picker(registry: Registry, status: EngineStatus, capabilities_of: Callable[[ModelSpec], Capabilities],
                        busy: bool = False,
                        list_served: Callable[[str, str], list[str]] | None = None) -> ModelChoice:
    """Model selectbox, its notes, Load (Connect, where a server holds the weights)/Unload buttons, and fields to
    add a local folder or a model server (`list_served(address, key variable)` asks a server what it serves)."""
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
    elsewhere = capabilities_of(spec).weights_elsewhere
    agreed = True
    if elsewhere and not is_loaded:  # the engine is shared: connecting sends everyone's next messages there
        st.caption(f"Connecting switches the model for everyone using this app: every user's next messages, with "
                   f"their conversations, go to {plain(spec.base_url or '?')}.")
        if spec.id.startswith(ADDED_SERVER_PREFIX):
            agreed = st.checkbox("Send everyone's chats to this server", key="agree_connect")
    left, right = st.columns(2)
    if elsewhere:
        label = "Reconnect" if is_loaded else "Connect"
    else:
        label = "Reload" if is_loaded else ("Switch" if status.state == "ready" else "Load")
    load = left.button(label, key="load_model", disabled=busy or status.state == "loading" or not agreed,
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
    server = _add_server(list_served) if list_served is not None else None
    return ModelChoice(spec=spec, load=load and agreed, unload=unload, added_folder=added, added_server=server)


def _add_server(list_served: Callable[[str, str], list[str]]) -> tuple[str, str, str] | None:
    """Address (and key variable) -> the server's /v1/models -> pick one -> a new row for this session."""
    with st.expander("Add a model server"):
        st.caption("Any OpenAI-compatible server: vLLM, SGLang, `transformers serve`, another MoE Chat.")
        url = st.text_input("Server address", key="server_url", placeholder="http://10.0.0.5:8000/v1").strip()
        key_env = st.text_input("API key variable (optional)", key="server_key_env",
                                placeholder="MOE_CHAT_SERVER_KEY_VLLM",
                                help="The NAME of an environment variable of this app holding the server's key "
                                     "(MOE_CHAT_SERVER_KEY_..., or one a row of models.toml names); the key "
                                     "itself is never typed here.").strip()
        if st.button("List its models", key="list_server_models", disabled=not url):
            try:
                st.session_state[state.SERVER_MODELS] = (url, key_env, list_served(url, key_env))
            except MoEChatError as exc:
                st.session_state[state.SERVER_MODELS] = None
                st.error(str(exc), icon=":material/error:")
        listed = st.session_state.get(state.SERVER_MODELS)
        if not listed or listed[:2] != (url, key_env):
            return None
        if not listed[2]:
            st.warning("The server lists no models.", icon=":material/warning:")
            return None
        model = st.selectbox("Served model", listed[2], key="server_model")
        if st.button("Add this model", key="add_server", type="primary"):
            return url, model, key_env
    return None


def render_status(status: EngineStatus) -> None:
    """One line for the engine's state, plus where the layers went once loaded."""
    if status.state == "ready":
        info = status.info
        connected = status.capabilities.weights_elsewhere
        parts = [f"**{status.model_name}** {'connected' if connected else 'ready'}", info.dtype,
                 info.device_summary, info.kernels]
        st.success(" · ".join(p for p in parts if p), icon=":material/check_circle:")
        for warning in info.warnings:
            st.warning(warning, icon=":material/warning:")
    elif status.state == "loading":
        st.info(status.message, icon=":material/hourglass_top:")
    elif status.state == "error":
        st.error(status.message, icon=":material/error:")
    else:
        st.info("No model loaded.", icon=":material/bedtime:")


def render_memory_panel(read: Callable[[], Any], refresh_s: float, server: str | None = None,
                        gpus_unusable: bool = False) -> None:
    """Memory readings that refresh on a timer without rerunning the page; `server` names who holds the weights
    when a server answers; `gpus_unusable`: the driver shows GPUs that torch cannot use."""

    @st.fragment(run_every=refresh_s)
    def panel() -> None:
        snap = read()
        for gpu in snap.gpus:
            share = gpu.used_bytes / gpu.total_bytes if gpu.total_bytes else 0.0
            st.progress(min(share, 1.0), text=f"GPU {gpu.index} {gpu.name}: {gib(gpu.used_bytes)} / "
                                               f"{gib(gpu.total_bytes)}")
            st.caption(f"this process: {gib(gpu.allocated_bytes)} allocated, {gib(gpu.reserved_bytes)} reserved")
        if not snap.gpus:
            st.caption("torch cannot use this machine's GPUs (see the top of the sidebar): models run on the CPU."
                       if gpus_unusable else "No CUDA GPU: the model runs on the CPU.")
        share = snap.system_used_bytes / snap.system_total_bytes if snap.system_total_bytes else 0.0
        st.progress(min(share, 1.0), text=f"RAM: {gib(snap.system_used_bytes)} / {gib(snap.system_total_bytes)}")
        st.caption(f"this process: {gib(snap.process_rss_bytes)} resident")

    st.subheader("Memory")
    if server:
        st.caption(f":material/dns: Model weights: held by the server ({server}), not by this process.")
    panel()


def render_downloads(folder: Any, free_bytes: int, origin: str) -> None:
    """Where hub downloads go, why there, and the free space on that disk."""
    st.caption(f":material/download: Downloads go to `{folder}` ({origin}): {gb(free_bytes)} free.")
