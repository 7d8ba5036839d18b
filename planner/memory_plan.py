"""The plan itself: `MemoryPlan`, the answer to "will it fit?", and `plan_memory`, which computes it with a verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.units import human_bytes
from planner.facts import ModelFacts, PlanError, walk
from planner.layout import GpuShare, Layout, lay_out
from planner.sizes import (
    CUDA_CONTEXT_BYTES,
    QUANT_BYTES,
    activation_bytes_per_token,
    kv_bytes_per_token,
    module_sizes,
    param_counts,
    quantized_counts,
    tensor_bytes,
)

DTYPES = ("bf16", "fp32", "int8", "int4")
LIGHTER = {"fp32": ("bf16", "int8", "int4"), "bf16": ("int8", "int4"), "int8": ("int4",), "int4": ()}
VERDICT_FOR = {"bf16": "needs bf16", "int8": "needs 8-bit", "int4": "needs 4-bit"}
MAX_GPUS_TRIED = 16
DEFAULT_CONTEXT = 4096  # tokens, when none is given (at most the model's window)


@dataclass(frozen=True)
class MemoryPlan:
    """The answer to "will it fit?"; sizes in bytes, parameter counts exact.

    Active parameters per token count everything one token's forward pass multiplies by: the embedding and the
    lm_head (whole matrices, as the published "A2.7B" / "A4.2B" figures do), every layer's attention (q/k/v/o and
    their biases), norms and router, the shared expert(s) (with Qwen's shared_expert_gate), and top_k / num_experts
    of the routed experts (the fused [E, 2I, H] and [E, H, I] tensors).
    Working memory per GPU = CUDA_CONTEXT_BYTES + context x activation_bytes_per_token, where
    activation_bytes_per_token = compute-dtype bytes x (2 x hidden + active params of the largest layer / hidden):
    the residual stream and the normed input, plus one output per token of each active weight matrix of a layer
    during prefill (attention scores are not counted: sdpa and flash attention keep them linear in the context).
    """

    model_type: str
    architecture: str
    dtype: str
    context: int
    total_params: int
    active_params: int
    params_by_group: tuple[tuple[str, int, int], ...]  # (group, total, active)
    num_experts: int
    experts_per_token: int
    weight_bytes: int  # resident: buffers, float32 routers and bitsandbytes scales included
    quantized_params: int  # stored in 8 / 4 bits (0 in bf16 / fp32): per-expert MoE experts included
    quantized_bytes: int  # what those take, scales and codes included
    kv_bytes_per_token: int  # 2 x layers x kv_heads x head_dim x compute-dtype bytes
    kv_bytes: int  # at `context`
    activation_bytes_per_token: int
    working_bytes: int  # per GPU at `context`: activations + CUDA context
    gpus: tuple[GpuShare, ...]
    spilled_bytes: int  # weights that would go to cpu/disk: the loader refuses them unless offload is chosen
    spilled_modules: tuple[str, ...]
    device_map: tuple[tuple[str, int | str], ...]  # what from_pretrained(device_map="auto") will choose
    max_context: int  # longest context that fits this placement (0: the weights do not fit)
    max_position_embeddings: int
    verdict: str  # fits | fits with N GPUs | needs bf16 | needs 8-bit | needs 4-bit | does not fit | no GPU detected
    gpus_needed: int | None  # GPUs (of the largest size given) this dtype needs; None: more than MAX_GPUS_TRIED
    advice: str
    rule_of_thumb_bytes: int  # the seed tutorials' 2 x 1.2 x total params


def _gpus_text(gpu_bytes: Sequence[int]) -> str:
    sizes = [f"{b / 2**30:.1f} GiB" for b in gpu_bytes]
    return f"{len(sizes)} x {sizes[0]}" if len(set(sizes)) == 1 else " + ".join(sizes)


def _verdict(facts: ModelFacts, dtype: str, gpu_bytes: Sequence[int], context: int,
             layout: Layout, weight_bytes: int) -> tuple[str, int | None, str]:
    fused = any(t.group == "routed_experts" and t.kind != "quantizable" for m in walk(facts.root) for t in m.params)
    bf16 = module_sizes(facts, "bf16", resident=True)[0].get("", 0) if fused and dtype in QUANT_BYTES else 0
    kept = (f" bitsandbytes converts only nn.Linear layers: the fused MoE experts stay bf16, so the {dtype} weights "
            f"take {human_bytes(weight_bytes)} (bf16: {human_bytes(bf16)})." if bf16 else "")
    if not gpu_bytes:
        return "no GPU detected", None, (f"No GPU to plan for: the {dtype} weights alone take "
                                         f"{human_bytes(weight_bytes)}. Give GPU sizes (e.g. 2 x 24 GiB) to see "
                                         f"where the layers would go.{kept}")
    if layout.fits(context):
        spare = human_bytes(min(s.free_bytes for s in layout.gpus if s.working_bytes))
        tail = f"{spare} to spare on the fullest GPU; contexts up to {layout.max_context:,} tokens fit.{kept}"
        for n in range(1, len(gpu_bytes)):
            if lay_out(facts, dtype, gpu_bytes[:n], context).fits(context):
                first = f"The first {n} of the {len(gpu_bytes)} GPUs would do. With all of them: "
                return f"fits with {n} GPU{'s' * (n > 1)}", n, first + tail
        return "fits", len(gpu_bytes), f"Loads in {dtype}; {tail}"
    largest = max(gpu_bytes)
    needed = next((n for n in range(len(gpu_bytes) + 1, MAX_GPUS_TRIED + 1)
                   if lay_out(facts, dtype, [largest] * n, context).fits(context)), None)
    more = f"{needed} x {largest / 2**30:.1f} GiB" if needed else f"more than {MAX_GPUS_TRIED} such GPUs"
    why = (f"{human_bytes(layout.spilled_bytes)} of the {dtype} weights ({human_bytes(weight_bytes)}) find no room on "
           f"{_gpus_text(gpu_bytes)} (the loader gives weights 90% of each GPU)" if layout.spilled_bytes else
           f"the {dtype} weights fit {_gpus_text(gpu_bytes)}, but only {layout.max_context:,} tokens of context "
           f"do, not {context:,}")
    note = ""
    if fused and dtype in ("bf16", "fp32"):
        int8 = sum(tensor_bytes(t, "int8") for m in walk(facts.root) for t in m.params)
        note = (f" (bitsandbytes leaves the fused MoE experts in bf16, so 8-bit only brings the weights to "
                f"{human_bytes(int8)})")
    for lighter in LIGHTER[dtype]:
        if lay_out(facts, lighter, gpu_bytes, context).fits(context):
            how = "bf16" if lighter == "bf16" else f"{lighter[3:]}-bit (bitsandbytes)"
            return (VERDICT_FOR[lighter], needed,
                    f"{why[0].upper()}{why[1:]}: load in {how}{note}, or use {more}.{kept}")
    shorter = "" if layout.spilled_bytes else ", or a shorter context"
    return "does not fit", needed, (f"{why[0].upper()}{why[1:]}, and lighter dtypes do not help{note}: use {more} "
                                    f"in {dtype}{shorter}.{kept}")


def plan_memory(facts: ModelFacts, dtype: str = "bf16", gpu_bytes: Sequence[int] = (),
                context: int | None = None) -> MemoryPlan:
    """Plan loading `facts`' model in `dtype` on GPUs of `gpu_bytes` (total bytes each) for `context` tokens
    (None: DEFAULT_CONTEXT, or the model's window if shorter).

    Pure and fast (milliseconds; a verdict other than "fits" re-plans a few times). The placement is the one the
    app's loader will get: placement.plan_placement's max_memory (90% of each GPU for weights, none on the CPU),
    then transformers' device_map="auto" algorithm (see `simulate_device_map`).
    """
    if context is None:
        context = min(DEFAULT_CONTEXT, facts.max_position_embeddings or DEFAULT_CONTEXT)
    if dtype not in DTYPES:
        raise PlanError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    if context < 1:
        raise PlanError(f"The context must be at least 1 token, not {context}.")
    if facts.max_position_embeddings and context > facts.max_position_embeddings:
        raise PlanError(f"A context of {context:,} tokens is longer than this model's window "
                        f"({facts.max_position_embeddings:,}): choose at most {facts.max_position_embeddings:,}.")
    if any(b <= 0 for b in gpu_bytes):
        raise PlanError("Every GPU needs a positive memory size (e.g. 24GiB).")
    gpu_bytes = [int(b) for b in gpu_bytes]
    counts = param_counts(facts)
    total = sum(c[1] for c in counts)
    weight_bytes = int(module_sizes(facts, dtype, resident=True)[0].get("", 0))
    layout = lay_out(facts, dtype, gpu_bytes, context)
    verdict, needed, advice = _verdict(facts, dtype, gpu_bytes, context, layout, weight_bytes)
    act = activation_bytes_per_token(facts, dtype)
    quantized_params, quantized_bytes = quantized_counts(facts, dtype)
    return MemoryPlan(
        model_type=facts.model_type, architecture=facts.architecture, dtype=dtype, context=context,
        total_params=total, active_params=sum(c[2] for c in counts), params_by_group=counts,
        num_experts=facts.num_experts, experts_per_token=facts.experts_per_token, weight_bytes=weight_bytes,
        quantized_params=quantized_params, quantized_bytes=quantized_bytes,
        kv_bytes_per_token=kv_bytes_per_token(facts, dtype), kv_bytes=kv_bytes_per_token(facts, dtype) * context,
        activation_bytes_per_token=act, working_bytes=CUDA_CONTEXT_BYTES + act * context, gpus=layout.gpus,
        spilled_bytes=layout.spilled_bytes, spilled_modules=layout.spilled,
        device_map=tuple(layout.device_map.items()), max_context=layout.max_context,
        max_position_embeddings=facts.max_position_embeddings, verdict=verdict, gpus_needed=needed, advice=advice,
        rule_of_thumb_bytes=total * 12 // 5,
    )

