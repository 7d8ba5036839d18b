"""Sidebar controls for how answers are generated: system prompt, sampling parameters, and the token count."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import streamlit as st

from chat_engine.budget import Budget
from chat_engine.interface import Capabilities
from chat_engine.params import OPTIONS, GenerationParams
from common.errors import MoEChatError
from common.messages import Message
from components import state


class ModelSide(Protocol):
    """What the panel asks of the engine about the ready model."""

    def default_params(self) -> GenerationParams: ...

    def context_budget(self, messages: Sequence[Message], max_new_tokens: int) -> Budget: ...

    def render_prompt(self, messages: Sequence[Message]) -> str: ...

_KEYS = {"do_sample": "gen_do_sample", "temperature": "gen_temperature", "top_p": "gen_top_p", "top_k": "gen_top_k",
         "repetition_penalty": "gen_repetition_penalty", "max_new_tokens": "gen_max_new_tokens", "seed": "gen_seed"}


def _shows(name: str, value: object) -> bool:
    """Whether a stored value (an old or crafted conversation's) is one the widgets can show; else the default."""
    option = OPTIONS[name]
    return option.problem(value) is None and (option.low is None or value is None or value >= option.lowest)


def _slider(label: str, name: str, disabled: bool = False) -> float:
    option = OPTIONS[name]
    return st.slider(label, float(option.lowest), float(option.high or 0), step=option.step, key=_KEYS[name],
                     disabled=disabled)


def _integer(label: str, name: str, disabled: bool = False) -> int | None:
    option = OPTIONS[name]
    high = None if option.optional else int(option.high or 0)  # the seed's 2^64 is beyond a browser's integers
    return st.number_input(label, min_value=int(option.lowest), max_value=high, step=int(option.step or 1),
                           key=_KEYS[name], disabled=disabled, **({"value": None} if option.optional else {}))


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
        temperature = _slider("Temperature", "temperature", disabled=not sample)
        top_p = _slider("Top-p", "top_p", disabled=not sample)
        top_k = _integer("Top-k (0: off)", "top_k", disabled=not sample)
        penalty = _slider("Repetition penalty", "repetition_penalty")
        max_new = _integer("Max new tokens", "max_new_tokens")
        seed = _integer("Seed (empty: random)", "seed")
        st.button("Reset to model defaults", key="gen_reset", on_click=_apply, args=(defaults,))
        try:
            return GenerationParams(max_new_tokens=int(max_new or 1), do_sample=sample,
                                    temperature=float(temperature), top_p=float(top_p), top_k=int(top_k or 0),
                                    repetition_penalty=float(penalty),
                                    seed=None if seed is None else int(seed),
                                    ignore_eos=defaults.ignore_eos)  # a row's own setting (benchmark rows)
        except MoEChatError as exc:
            st.error(str(exc), icon=":material/error:")
            return None


def render_token_count(count: Callable[[], Budget | None]) -> None:
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


def render(engine: ModelSide, system_default: str | None, model_id: str, capabilities: Capabilities,
           max_new_tokens: int, messages: list[Message],
           to_send: Callable[[list[Message], str], list[Message]]) -> tuple[str, GenerationParams | None]:
    """The sidebar's generation section for the ready model; returns the system prompt and the parameters.
    `to_send(messages, system)` is the conversation as it would be sent with that system prompt."""
    system = render_system_prompt(system_default)
    try:
        defaults = engine.default_params()
    except MoEChatError as exc:  # another session unloaded or switched the model since this run looked
        st.warning(str(exc), icon=":material/schedule:")
        return system, None
    params = render_params(defaults, model_id)
    sees = capabilities.experts_view
    st.toggle("Show the experts at work", key=state.RECORD_ROUTING, disabled=not sees,
              help="Records which experts each token used, in every MoE layer, and shows it under the answer "
                   "(saved with it)." if sees else "This model's routers are out of sight here (a server's, for "
                   "one): it takes a model loaded in this app.")
    max_new = params.max_new_tokens if params else max_new_tokens
    render_token_count(lambda: engine.context_budget(to_send(messages, system), max_new) if messages else None)
    render_exact_prompt(lambda: engine.render_prompt(to_send(messages or [{"role": "user", "content": "…"}], system)))
    return system, params
