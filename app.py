"""MoE Chat: the page. Composes components around the engine, which does all model work."""

from __future__ import annotations

import streamlit as st

from chat_engine.engine import Engine
from components import chat, load_panel, plan_panel, sidebar, state
from model_loader.errors import MoEChatError
from model_loader.machine_fit import gpu_sizes
from model_loader.registry import Registry, load_registry
from model_loader.settings import Settings

st.set_page_config(page_title="MoE Chat", page_icon="💬", layout="wide")


@st.cache_resource
def get_settings() -> Settings:
    return Settings.from_env()


@st.cache_resource(on_release=Engine.close)
def get_engine() -> Engine:
    """The one engine of this server process, shared by every browser session."""
    return Engine(get_settings())


def current_registry(settings: Settings) -> Registry:
    registry = load_registry(settings.models_file)
    for folder in st.session_state.get(state.LOCAL_FOLDERS, []):
        registry, _ = registry.with_local_folder(folder)
    return registry


def load_model(engine: Engine, spec) -> None:
    """Load with visible progress, then rerun so every widget shows the new state."""
    with st.status(f"Loading {spec.name}...", expanded=True) as box:
        try:
            engine.load(spec, on_stage=box.write)
        except MoEChatError:
            box.update(label=f"{spec.name} did not load", state="error")
            return  # the engine's status carries the reason; the sidebar shows it
    st.rerun()


def main() -> None:
    settings = get_settings()
    engine = get_engine()
    registry = current_registry(settings)
    state.init(st.session_state, registry.default_id(engine.has_gpu, settings.default_model))

    with st.sidebar:
        st.title("MoE Chat")
        if not st.session_state[state.AUTOLOADED]:
            st.session_state[state.AUTOLOADED] = True
            default = registry.get(st.session_state[state.MODEL_CHOICE])
            if default.preload and engine.status().state == "empty":
                load_model(engine, default)
        job = engine.job()
        choice = sidebar.render_model_picker(registry, engine.status(), busy=job is not None and job.running)
        if choice.added_folder:
            try:
                registry, added = registry.with_local_folder(choice.added_folder)
            except MoEChatError as exc:
                st.error(str(exc), icon=":material/error:")
            else:
                st.session_state[state.LOCAL_FOLDERS].append(choice.added_folder)
                st.session_state[state.PENDING_CHOICE] = added.id
                st.rerun()
        fit_warning = st.container()  # the plan's warning belongs under the Load button
        status_box = st.container()  # drawn after the actions below, shown above the options
        plan_panel.render(choice.spec, engine.plan_fit, gpu_sizes, fit_warning)
        options = load_panel.render_options(engine.devices, lambda o: engine.preview_placement(o, choice.spec))
        if choice.unload:
            engine.unload()
            st.rerun()
        elif choice.load and options is not None:
            engine.start_load(choice.spec, options)
            st.rerun()
        with status_box:
            job = engine.job()
            if job is not None and job.running:
                load_panel.render_job(engine.job, engine.cancel_job)
            else:
                load_panel.render_job_outcome(job)
            sidebar.render_status(engine.status())
        st.divider()
        if sidebar.render_conversation_controls():
            st.session_state[state.MESSAGES] = []
        sidebar.render_memory_panel(engine.memory, settings.memory_refresh_s)

    status = engine.status()
    loaded_spec = registry.get(status.model_id) if status.state == "ready" and status.model_id in registry.ids \
        else None
    chat.render_model_banner(loaded_spec)
    messages = st.session_state[state.MESSAGES]
    chat.render_history(messages)
    prompt = chat.render_input(status.state == "ready", status.model_name)
    if not prompt or not prompt.strip():
        return
    messages.append({"role": "user", "content": prompt})
    with st.chat_message("user"):
        st.markdown(prompt)
    with st.chat_message("assistant"):
        try:
            reply = chat.stream_reply(engine.chat(messages), settings.stream_interval_s)
        except MoEChatError as exc:
            reply = chat.Reply("", str(exc))
        if reply.error:
            chat.show_error(reply.error)
    if reply.text:
        messages.append({"role": "assistant", "content": reply.text})


main()
