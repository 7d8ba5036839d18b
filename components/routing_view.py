"""The experts at work under an answer: which expert each token went to in each MoE layer, and how the load spread.

Drawn with Vega-Lite (Streamlit's chart element) from the routing saved with the answer; the prompt's routing and
the answer's are shown apart. A long answer is drawn `WINDOW` tokens at a time, so the page never freezes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pandas as pd
import streamlit as st

from common.routing import Routing, entropy_bits

WINDOW = 120  # tokens in one view of the token map
ROW_PX = 26  # height of one layer's row


@lru_cache(maxsize=32)  # every rerun draws every answer's view: the same routing is not walked again
def _token_map(routing: Routing, rows: range) -> tuple[dict[str, Any], ...]:
    records = []
    for t in rows:
        text = routing.tokens[t].replace("\n", "⏎") or "∅"
        for layer in range(routing.layers):
            top = [(routing.expert(t, layer, j), routing.weight(t, layer, j)) for j in range(routing.top_k)]
            records.append({"token": t - rows.start + 1, "text": text, "layer": layer, "expert": top[0][0],
                            "experts": " · ".join(f"#{e} {w:.2f}" for e, w in top)})
    return tuple(records)


@lru_cache(maxsize=32)
def _load(routing: Routing, rows: range) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(share of tokens per layer and expert, per layer: experts never used and routing entropy)."""
    counts = [[0] * routing.num_experts for _ in range(routing.layers)]
    for t in rows:
        for layer in range(routing.layers):
            for j in range(routing.top_k):
                counts[layer][routing.expert(t, layer, j)] += 1
    n = max(len(rows), 1)
    load = pd.DataFrame([{"layer": layer, "expert": e, "share": c / n} for layer, row in enumerate(counts)
                         for e, c in enumerate(row)])
    summary = pd.DataFrame([{"layer": layer, "experts never used": f"{row.count(0) / len(row):.0%}",
                             "entropy (bits)": round(entropy_bits(row), 2),
                             "busiest expert": f"#{max(range(len(row)), key=row.__getitem__)}"}
                            for layer, row in enumerate(counts)])
    return load, summary


def _part(routing: Routing, rows: range, key: str) -> None:
    if not rows:
        st.caption("Nothing recorded here.")
        return
    shown = rows
    if len(rows) > WINDOW:
        start = st.slider("From token", 1, len(rows) - WINDOW + 1, 1, step=1, key=key)
        shown = range(rows.start + start - 1, rows.start + start - 1 + WINDOW)
    scheme = "category20" if routing.num_experts <= 20 else "turbo"
    st.vega_lite_chart({
        "data": {"values": list(_token_map(routing, shown))}, "mark": {"type": "rect"}, "height": {"step": ROW_PX},
        "width": "container",
        "encoding": {
            "x": {"field": "token", "type": "ordinal", "title": f"token ({len(rows)} in all)",
                  "axis": {"labelOverlap": True}},
            "y": {"field": "layer", "type": "ordinal", "title": "MoE layer"},
            "color": {"field": "expert", "type": "ordinal", "title": "first expert", "scale": {"scheme": scheme},
                      "legend": {"orient": "bottom", "columns": min(routing.num_experts, 16)}},
            "tooltip": [{"field": "text", "title": "token"}, {"field": "layer"},
                        {"field": "experts", "title": f"top-{routing.top_k} experts, weights"}],
        },
    }, key=f"{key}_map")
    load, summary = _load(routing, rows)
    st.caption(f"Expert load: the share of these {len(rows)} tokens routed to each expert, per layer.")
    st.vega_lite_chart(load, {
        "mark": {"type": "rect"}, "height": {"step": ROW_PX}, "width": "container",
        "encoding": {"x": {"field": "expert", "type": "ordinal"}, "y": {"field": "layer", "type": "ordinal"},
                     "color": {"field": "share", "type": "quantitative", "scale": {"scheme": "blues"}},
                     "tooltip": [{"field": "layer"}, {"field": "expert"},
                                 {"field": "share", "format": ".1%"}]},
    }, key=f"{key}_load")
    st.dataframe(summary, hide_index=True, key=f"{key}_summary")


def render(data: dict[str, Any], key: str) -> None:
    """The routing saved with an answer, in an expander under it."""
    routing = Routing.from_dict(data)
    if routing is None:
        st.caption("The routing saved with this answer cannot be read.")
        return
    answer = range(routing.prompt_tokens, routing.rows)
    with st.expander(f"Experts at work: {len(answer)} answer and {routing.prompt_tokens} prompt tokens × "
                     f"{routing.layers} layers, top-{routing.top_k} of {routing.num_experts} experts",
                     icon=":material/hub:"):
        st.caption(f"Besides these routed experts: {routing.shared}. Each cell is the expert ranked first for a "
                   f"token in a layer; hover for all {routing.top_k} with their weights. An answer's last token is "
                   "never read back by the model, so it has no routing.")
        answer_tab, prompt_tab = st.tabs(["Answer", "Prompt"])
        with answer_tab:
            _part(routing, answer, f"{key}_answer")
        with prompt_tab:
            _part(routing, range(0, routing.prompt_tokens), f"{key}_prompt")
