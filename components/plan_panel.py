"""The "Will it fit?" panel: the memory plan of the selected model, before anything is downloaded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from common.errors import MoEChatError
from common.units import GIB, gib, params
from model_loader.registry import ModelSpec

PLAN_DTYPES = ("bf16", "int8", "int4")


def _split_chart(plan: Any) -> None:
    rows = {f"GPU {g.index}": {"weights": g.weight_bytes / GIB, "KV cache": g.kv_bytes / GIB,
                               "working": g.working_bytes / GIB, "free": max(g.free_bytes, 0) / GIB}
            for g in plan.gpus}
    st.bar_chart(pd.DataFrame(rows).T, horizontal=True, height=60 + 35 * len(rows), y_label="",
                 x_label="GiB", color=["#4c78a8", "#f58518", "#e45756", "#d3d3d3"])


def render(spec: ModelSpec, plan_fit: Callable[..., Any], parse_gpus: Callable[[str], list[int]],
           warning_box: Any, weights_elsewhere: bool = False) -> Any | None:
    """Draw the plan for `spec`; warn in `warning_box` (under the Load button) when it will not fit.

    A model whose weights a server holds (`weights_elsewhere`) is planned only for GPUs the user types (the
    server's), and only when its row names a config.
    """
    with st.expander("Will it fit?", expanded=False):
        if weights_elsewhere and spec.config is None:
            st.caption("Does not apply: the server holds this model's weights, and its row names no config to plan "
                       "from (add config = \"<copy of its config.json>\" to plan it for the server's GPUs).")
            return None
        gpus_text = st.text_input("Plan for GPUs", key="plan_gpus",
                                  placeholder="the server's GPUs, e.g. 2x24GiB" if weights_elsewhere
                                  else "this machine (or e.g. 2x24GiB)")
        if weights_elsewhere and not gpus_text.strip():
            st.caption("Type the server's GPUs to plan this model for them.")
            return None
        left, right = st.columns(2)
        dtype = left.selectbox("Weights", PLAN_DTYPES, key="plan_dtype")
        context = right.number_input("Context", min_value=256, max_value=1_048_576, value=None, step=1024,
                                     key="plan_context", placeholder="4096")
        try:
            sizes = parse_gpus(gpus_text) if gpus_text.strip() else None
            result = plan_fit(spec, dtype=dtype, gpu_bytes=sizes, context=None if context is None else int(context))
        except MoEChatError as exc:
            st.error(str(exc), icon=":material/error:")
            return None
        plan = result.plan
        (st.success if result.fits else st.error)(f"**{result.headline}** on {result.target}")
        st.caption(result.detail)
        st.caption(
            f"{params(plan.total_params)} parameters, {params(plan.active_params)} active per token · "
            f"weights {gib(plan.weight_bytes)} · KV cache {plan.kv_bytes_per_token / 1024:.0f} KiB per token, "
            f"{gib(plan.kv_bytes)} at {plan.context:,} tokens · longest context that fits {plan.max_context:,}"
        )
        if plan.gpus:
            _split_chart(plan)
        st.caption(f"The tutorials' rule 2 x 1.2 x P would budget {plan.rule_of_thumb_bytes / 1e9:.1f} GB.")
    if not result.fits:
        with warning_box:
            st.warning(f"{spec.name}: **{result.headline.lower()}** ({result.target}); loading will likely fail. "
                       "See *Will it fit?* below.", icon=":material/warning:")
    return result
