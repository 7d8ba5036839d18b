"""Sidebar controls for how answers are generated: system prompt, sampling parameters, and the token count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from chat_engine.params import GenerationParams
from common.errors import MoEChatError
from components import state

_KEYS = {"do_sample": "gen_do_sample", "temperature": "gen_temperature", "top_p": "gen_top_p", "top_k": "gen_top_k",
         "repetition_penalty": "gen_repetition_penalty", "max_new_tokens": "gen_max_new_tokens", "seed": "gen_seed"}


# The widgets' ranges: a stored value outside them (an old or crafted conversation) is left at the model default.
_RANGES = {"temperature": (0.05, 2.0), "top_p": (0.05, 1.0), "top_k": (0, 1000), "repetition_penalty": (1.0, 2.0),
           "max_new_tokens": (1, 32768), "seed": (0, 2**63 - 1)}


def _shows(name: str, value: Any) -> bool:
    if name == "do_sample":
        return isinstance(value, bool)
    if name == "seed" and value is None:
        return True
    low, high = _RANGES[name]
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def _apply(defaults: GenerationParams) -> None:
    for name, key in _KEYS.items():
        st.session_state[key] = getattr(defaults, name)


def render_system_prompt(default: str | None) -> str:
    """The conversation's system prompt; empty means the model's template decides (shown in the exact prompt)."""
    if state.SYSTEM_PROMPT not in st.session_state:
        st.session_state[state.SYSTEM_PROMPT] = default or ""
    return st.text_area("System prompt", key=state.SYSTEM_PROMPT, height=80,
                        placeholder="Empty: the model's own default applies (see Exact prompt below)")


def render_params(defaults: GenerationParams, model_id: str) -> GenerationParams | None:
    """Sampling controls initialised from the model's generation_config; None (with the reason) if invalid."""
    # A newly loaded model brings its own defaults; so does a page run after the panel was hidden (Streamlit
    # forgets the values of widgets that were not drawn).
    restored = st.session_state.pop(state.RESTORED_PARAMS, None)
    if restored:  # a reopened conversation brings back the parameters it was held with, those the widgets can show
        try:
            _apply(defaults.updated(**{k: v for k, v in restored.items() if k in _KEYS and _shows(k, v)}))
        except (MoEChatError, TypeError):
            _apply(defaults)
        st.session_state[state.PARAMS_FOR_MODEL] = model_id
    elif (st.session_state.get(state.PARAMS_FOR_MODEL) != model_id
          or any(k not in st.session_state for k in _KEYS.values())):
        _apply(defaults)
        st.session_state[state.PARAMS_FOR_MODEL] = model_id
    with st.expander("Generation"):
        sample = st.toggle("Sample (off: greedy, deterministic)", key=_KEYS["do_sample"])
        temperature = st.slider("Temperature", 0.05, 2.0, step=0.05, key=_KEYS["temperature"], disabled=not sample)
        top_p = st.slider("Top-p", 0.05, 1.0, step=0.05, key=_KEYS["top_p"], disabled=not sample)
        top_k = st.number_input("Top-k (0: off)", min_value=0, max_value=1000, step=1, key=_KEYS["top_k"],
                                disabled=not sample)
        penalty = st.slider("Repetition penalty", 1.0, 2.0, step=0.01, key=_KEYS["repetition_penalty"])
        max_new = st.number_input("Max new tokens", min_value=1, max_value=32768, step=64,
                                  key=_KEYS["max_new_tokens"])
        seed = st.number_input("Seed (empty: random)", min_value=0, step=1, key=_KEYS["seed"], value=None)
        st.button("Reset to model defaults", key="gen_reset", on_click=_apply, args=(defaults,))
        try:
            return GenerationParams(max_new_tokens=int(max_new), do_sample=sample, temperature=float(temperature),
                                    top_p=float(top_p), top_k=int(top_k), repetition_penalty=float(penalty),
                                    seed=None if seed is None else int(seed),
                                    ignore_eos=defaults.ignore_eos)  # a row's own setting (benchmark rows)
        except MoEChatError as exc:
            st.error(str(exc), icon=":material/error:")
            return None


def render_token_count(count: Callable[[], Any]) -> None:
    """ "Conversation: 1,234 of 32,768 tokens (512 kept for the answer)" """
    try:
        budget = count()
    except MoEChatError as exc:
        st.caption(str(exc))
        return
    if budget is None:
        return
    used = budget.prompt_tokens
    about = "about " if budget.estimated else ""
    st.progress(min(1.0, (used + budget.reserved_for_answer) / budget.context),
                text=f"Conversation: {about}{used:,} of {budget.context:,} tokens "
                     f"({budget.reserved_for_answer:,} kept for the answer)")
    if budget.estimated:
        st.caption("Estimated: the app cannot see this model's tokenizer (give its row a tokenizer for exact counts).")
    if budget.notice:
        st.caption(budget.notice)


def render_exact_prompt(render: Callable[[], str]) -> None:
    """The prompt exactly as the model sees it, template defaults included."""
    with st.expander("Exact prompt"):
        try:
            st.code(render(), language=None, wrap_lines=True)
        except MoEChatError as exc:
            st.caption(str(exc))


def render(engine: Any, spec: Any, model_id: str, settings: Any, messages: list[dict[str, Any]],
           to_send: Callable[[list[dict[str, Any]], str], list[dict[str, str]]]) -> tuple[str, GenerationParams | None]:
    """The sidebar's generation section for the ready model; returns the system prompt and the parameters."""
    system = render_system_prompt(spec.system_prompt if spec else None)
    try:
        defaults = engine.default_params()
    except MoEChatError as exc:  # another session unloaded or switched the model since this run looked
        st.warning(str(exc), icon=":material/schedule:")
        return system, None
    params = render_params(defaults, model_id)
    remote = bool(spec is not None and getattr(spec, "remote", False))
    st.toggle("Show the experts at work", key=state.RECORD_ROUTING, disabled=remote,
              help="Records which experts each token used, in every MoE layer, and shows it under the answer "
                   "(saved with it)." if not remote else "Needs a model loaded in this app: a server's routers "
                   "are out of sight.")
    max_new = params.max_new_tokens if params else settings.max_new_tokens
    render_token_count(lambda: engine.context_budget(to_send(messages, system), max_new) if messages else None)
    render_exact_prompt(lambda: engine.render_prompt(to_send(messages or [{"role": "user", "content": "…"}], system)))
    return system, params
