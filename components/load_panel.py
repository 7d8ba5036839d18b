"""Load options for the selected model, and the progress of a background download-and-load."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import streamlit as st

from common.errors import MoEChatError
from common.units import gib
from model_loader.options import ATTENTIONS, DTYPES, EXPERTS, LoadOptions

_LABELS = {
    "auto": "auto", "bfloat16": "bf16", "float16": "fp16", "float32": "fp32",
    "none": "none (16-bit)", "8bit": "8-bit", "4bit": "4-bit",
    "sdpa": "sdpa", "eager": "eager", "flash_attention_2": "flash-attention 2",
    "grouped_mm": "grouped_mm", "batched_mm": "batched_mm",
}
QUANT_HELP = ("bitsandbytes on a CUDA GPU. Qwen2-MoE and XVERSE-MoE models load one quantized Linear per expert, "
              "so their experts (most of the weights) shrink too: in 4-bit (nf4) both seed models fit one 24 GB GPU.")
_OFFLOAD = {"none": "GPUs only", "cpu": "allow CPU offload", "disk": "allow CPU and disk offload"}


def render_options(facts: Any, preview: Any) -> LoadOptions | None:
    """The load-options expander; returns the options, or None (with the reason shown) if they are invalid.

    `preview(options)` returns the placement the engine would use, so the automatic choices are shown.
    """
    with st.expander("Load options"):
        dtype = st.selectbox("Weights dtype", DTYPES, format_func=_LABELS.get, key="opt_dtype",
                             help="auto: bf16 on GPU, float32 on CPU")
        quant_ok = facts.cuda_count > 0 and facts.bitsandbytes_installed
        quantization = st.selectbox("Quantization", ("none", "8bit", "4bit"), format_func=_LABELS.get,
                                    key="opt_quantization", disabled=not quant_ok,
                                    help=QUANT_HELP if quant_ok else f"{QUANT_HELP} Needs a CUDA GPU and "
                                    "bitsandbytes (pip install -r requirements-gpu.txt).")
        attention = st.selectbox("Attention", ATTENTIONS, format_func=_LABELS.get, key="opt_attention")
        experts = st.selectbox("Experts kernel", EXPERTS, format_func=_LABELS.get, key="opt_experts",
                               help="auto: grouped_mm where it can run, else eager")
        gpus = None
        memory = None
        offload = "none"
        if facts.cuda_count:
            all_gpus = [g.index for g in facts.gpus]
            names = {g.index: f"GPU {g.index}: {g.name} ({gib(g.total_bytes)})" for g in facts.gpus}
            gpus = tuple(st.multiselect("GPUs to use", all_gpus, default=all_gpus, format_func=names.get,
                                        key="opt_gpus"))
            cap = st.number_input("Memory per GPU for weights (GiB, 0 = 90% of each)", min_value=0.0,
                                  value=0.0, step=1.0, key="opt_gpu_memory")
            memory = cap or None
            offload = st.radio("When the GPUs are full", tuple(_OFFLOAD), format_func=_OFFLOAD.get,
                               key="opt_offload", help="Offloaded layers run far slower than on a GPU.")
        try:
            options = LoadOptions(dtype=dtype, quantization=quantization if quant_ok else "none",
                                  attention=attention, experts=experts, gpus=gpus, gpu_memory_gib=memory,
                                  offload=offload)
            placement = preview(options)
        except MoEChatError as exc:
            st.error(str(exc), icon=":material/error:")
            return None
        experts_text = placement.experts or "auto (grouped_mm where it can run, else eager)"
        if placement.quantization != "none":
            experts_text = (f"one {_LABELS[placement.quantization]} Linear per expert for Qwen2-MoE and XVERSE-MoE "
                            "(bitsandbytes; other MoE types keep fused bf16 experts)")
        where = placement.device
        if placement.max_memory:
            where = "GPUs " + ", ".join(str(k) for k in placement.max_memory if k != "cpu")
        st.caption(f"Will load: {placement.dtype} on {where} · attention **{placement.attention}** "
                   f"({placement.attention_reason}) · experts {experts_text}")
    return options


def _progress_line(job: Any) -> tuple[float | None, str]:
    p = job.progress
    if p is None:
        return None, job.message
    done = gib(p.bytes_done)
    total = gib(p.bytes_total) if p.bytes_total else "?"
    rate = f" · {p.rate_bytes_per_s / 1024**2:.1f} MiB/s" if p.rate_bytes_per_s else ""
    eta = f" · about {p.eta_s / 60:.0f} min left" if p.eta_s and p.eta_s >= 60 else (
        f" · about {p.eta_s:.0f} s left" if p.eta_s else "")
    return p.fraction, f"{done} / {total}{rate}{eta} ({p.files_done}/{p.files_total} files)"


def render_job(read_job: Any, cancel: Any, refresh_s: float = 0.5) -> None:
    """Progress of the background load, redrawn on a timer; reruns the page once the job ends."""

    @st.fragment(run_every=refresh_s)
    def panel() -> None:
        job = read_job()
        if job is None or not job.running:
            st.rerun(scope="app")  # the model status and the message box change with the job's end
        fraction, line = _progress_line(job)
        st.caption(f"**{job.model_name}**: {job.message}")
        if fraction is not None:
            st.progress(min(max(fraction, 0.0), 1.0), text=line)
        elif job.stage == "downloading":
            st.caption(line)
        if cancel is not None and job.stage in ("preparing", "downloading") and st.button("Cancel download",
                                                                                            key="cancel_download"):
            cancel()

    panel()


def render_job_outcome(job: Any) -> None:
    """What became of the last background load, once (failed or cancelled jobs leave a message)."""
    if job is not None and job.stage in ("failed", "cancelled"):
        st.error(job.message, icon=":material/error:")


def wait_for_job(read_job: Callable[[], Any], poll_s: float = 0.1) -> None:
    """Show a background load's stages in place until it ends (the first page of a session, for the default)."""
    job = read_job()
    if job is None:
        return
    with st.status(f"Loading {job.model_name}...", expanded=True) as box:
        shown = None
        while job.running:
            if job.message != shown:
                box.write(job.message)
                shown = job.message
            time.sleep(poll_s)
            job = read_job()
        if job.stage != "done":
            box.update(label=f"{job.model_name} did not load", state="error")  # the status line says why
            return
    st.rerun()


def render_job_or_outcome(read_job: Callable[[], Any], cancel: Callable[[], None] | None) -> None:
    """The running load's progress (with Cancel, unless `cancel` is None), or what became of the last one."""
    job = read_job()
    if job is not None and job.running:
        render_job(read_job, cancel)
    else:
        render_job_outcome(job)
