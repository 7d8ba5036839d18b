"""MoE Chat: the page. Composes components around the engine, which does all model work."""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from chat_engine.budget import ContextOverflowError
from chat_engine.engine import Engine
from chat_engine.prompt import check_length, clean_text
from chat_engine.store import ConversationStore
from components import chat, conversations, gate, generation_panel, load_panel, plan_panel, sidebar, state
from components.journal import Journal
from components.markdown import escape_dollars
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


@st.cache_resource
def get_store() -> ConversationStore:
    """The conversations database, shared by every session (thread-safe)."""
    return ConversationStore(get_settings().db)


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
    if not gate.render(settings.password or gate.secrets_password()):
        st.stop()  # nothing else is drawn, and no model is touched, before the right password
    engine = get_engine()
    registry = current_registry(settings)
    state.init(st.session_state, registry.default_id(engine.has_gpu, settings.default_model))
    journal = Journal(get_store())
    journal.restore_from_url()

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
        current = journal.current()
        journal.apply(conversations.render(journal.store.list_conversations(), current,
                                           journal.store.export_markdown, journal.store.export_json))
        st.divider()
        sidebar.render_memory_panel(engine.memory, settings.memory_refresh_s)

    status = engine.status()
    ready = status.state == "ready"
    loaded_spec = registry.get(status.model_id) if ready and status.model_id in registry.ids else None
    messages = st.session_state[state.MESSAGES]
    params = None
    if ready:
        with st.sidebar:
            system = generation_panel.render_system_prompt(loaded_spec.system_prompt if loaded_spec else None)
            params = generation_panel.render_params(engine.default_params(), status.model_id)
            max_new = params.max_new_tokens if params else settings.max_new_tokens
            generation_panel.render_token_count(
                lambda: engine.context_budget(to_send(messages, system), max_new) if messages else None)
            generation_panel.render_exact_prompt(
                lambda: engine.render_prompt(to_send(messages or [{"role": "user", "content": "…"}], system)))

    chat.render_model_banner(loaded_spec)
    notice = st.session_state.get(state.NOTICE)
    if notice:
        st.session_state[state.NOTICE] = None
        st.info(notice, icon=":material/info:")
    held_with = st.session_state.get(state.CONVERSATION_MODEL)
    if held_with and held_with != status.model_id and held_with in registry.ids:
        spec = registry.get(held_with)
        st.info(f"This conversation was held with **{spec.name}**; {status.model_name or 'no model'} is loaded now.",
                icon=":material/swap_horiz:")
        if st.button(f"Switch to {spec.name}", key="switch_to_conversation_model"):
            engine.start_load(spec)
            st.rerun()
    action = chat.render_history(messages, actions=ready and params is not None)
    can_send = ready and params is not None
    prompt = chat.render_input(can_send, status.model_name, settings.max_message_chars)
    if prompt:
        prompt = clean_text(prompt)
        try:
            check_length(prompt, settings.max_message_chars)  # the browser enforces it too; this is the server
        except MoEChatError as exc:
            chat.show_error(str(exc))
            prompt = None
    if prompt and prompt.strip() and not can_send:
        chat.show_unsent(prompt, unready_reason(status, engine.job()))
        prompt = None
    if action.regenerate and messages and messages[-1]["role"] == "assistant":
        messages.pop()
        journal.truncate(len(messages))
        st.session_state[state.PENDING_REPLY] = True
        st.rerun()
    if action.edited is not None:
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        del messages[last_user:]
        journal.truncate(last_user)
        messages.append({"role": "user", "content": action.edited})
        journal.record_user(action.edited, status.model_id, system, params.as_dict())
        st.session_state[state.PENDING_REPLY] = True
        st.rerun()
    pending = st.session_state.pop(state.PENDING_REPLY, False)
    if prompt and prompt.strip():
        messages.append({"role": "user", "content": prompt})
        journal.record_user(prompt, status.model_id, system, params.as_dict())
        with st.chat_message("user"):
            st.markdown(escape_dollars(prompt))
    elif not pending or not ready or params is None:
        return
    answer(engine, journal, messages, system, params, settings)


def unready_reason(status, job) -> str:
    """Why a message cannot be answered now (the page may have been drawn before another session acted)."""
    if job is not None and job.running:
        return f"{job.model_name} is being loaded"
    if status.state == "loading":
        return f"{status.model_name} is being loaded"
    if status.state != "ready":
        return "No model is loaded (load one in the sidebar)"
    return "The generation parameters are invalid (see Generation in the sidebar)"


def to_send(messages: list[dict], system: str) -> list[dict[str, str]]:
    """The conversation as the engine takes it: role and content only, the system prompt first if one is set."""
    head = [{"role": "system", "content": system}] if system.strip() else []
    return head + [{"role": m["role"], "content": m["content"]} for m in messages]


def answer(engine: Engine, journal: Journal, messages: list[dict], system: str, params, settings: Settings) -> None:
    """Stream the model's reply to the last user message into a new bubble, keeping whatever happens."""
    owner = get_script_run_ctx().session_id
    conv_id = journal.current_id

    def keep(text: str, reason: str, stream=None, error: str | None = None) -> None:
        result = getattr(stream, "result", None)
        used = getattr(stream, "params", None) or params  # what the engine actually generated with
        stats = {"finish_reason": reason, "tokens": getattr(stream, "new_tokens", 0), "sampling": sampling_text(used)}
        if getattr(stream, "interruption", None):
            stats["note"] = stream.interruption  # stopped by someone else: say who and why
        if error:
            stats["error"] = error  # shown under the answer, also after a refresh
        if result is not None:
            stats.update(ttft_s=result.time_to_first_token_s, tokens_per_s=result.tokens_per_s,
                         tokens=result.new_tokens)
        messages.append({"role": "assistant", "content": text, "stats": stats})
        journal.record_answer(conv_id, text, stats)

    with st.chat_message("assistant"):
        try:
            stream = engine.chat(to_send(messages, system), params, owner=owner)
        except ContextOverflowError as exc:
            refused = messages.pop()  # not sent, not kept in the history; shown so it can be copied
            journal.truncate(len(messages))
            chat.show_error(str(exc))
            st.code(refused["content"], language=None, wrap_lines=True)
            return
        except MoEChatError as exc:
            chat.show_error(str(exc))
            return
        if stream.budget.notice:
            st.caption(stream.budget.notice)
        line = st.empty()
        stream.on_wait = lambda n: line.caption(f"Waiting for the model, which answers {settings.concurrency} "
                                                f"request(s) at a time: you are number {n} in line. Stop leaves it.")
        reply = chat.stream_reply(stream, settings.stream_interval_s,
                                  on_interrupt=lambda partial: keep(partial, "stopped", stream))
        line.empty()
        reason = stream.result.finish_reason if stream.result else ("error" if reply.error else "stopped")
        keep(reply.text, reason, stream, reply.error)
    st.rerun()  # draws the finished answer with its stats, error and actions


def sampling_text(params) -> str:
    if not params.do_sample:
        return "greedy"
    seed = f" · seed {params.seed}" if params.seed is not None else ""
    return f"T {params.temperature:g} · top-p {params.top_p:g} · top-k {params.top_k}{seed}"


main()
