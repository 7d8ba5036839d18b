"""`python -m planner MODEL [--gpus 2x24GiB] [--dtype bf16|int8|int4|fp32] [--context N] [--json]`.

Will MODEL fit these GPUs? Reads only the model's config.json: MODEL is a registry id (`demo-moe`,
`qwen1.5-moe-a2.7b-chat`, ...; the row's config copy is used, or for a hub row without one, config.json alone is
fetched), a ModelScope / Hugging Face id (only config.json is fetched), or a checkpoint folder / config.json path.
Without --gpus it plans for the GPUs this machine has (torch is imported only where a GPU driver shows). The
placement is the one the app's loader will use (90% of each GPU for weights, device_map="auto"). The built-in
models' counts ship with the repo (planner/plan_facts/), so planning them never imports torch or transformers;
any other config is built once on the meta device (a few seconds) and its counts cached under the cache dir
(MOE_CHAT_CACHE_DIR / MODELSCOPE_CACHE, `.moe-chat/plans`), so later runs take a fraction of a second.
Exit status: 0 with a plan, whatever the verdict; 1 with a one-line error.

--json prints one object; schema 1, stable fields (sizes in bytes, counts exact):
  schema                    1
  model                     MODEL as resolved (registry id, hub id or path)
  model_type                e.g. "qwen2_moe"
  architecture              e.g. "Qwen2MoeForCausalLM"
  dtype                     "bf16" | "fp32" | "int8" | "int4" (bitsandbytes; per-expert for qwen2_moe and xverse)
  context                   tokens planned for (prompt + answer)
  params                    {"total", "active", "by_group": {group: {"total", "active"}}}; groups: embedding,
                            lm_head, attention, router, routed_experts, shared_experts, norms, dense_mlp, other
  experts                   {"routed": experts per layer (0: dense), "per_token": experts each token uses}
  weight_bytes              resident weights of the whole model (buffers, float32 routers, 8/4-bit scales included)
  quantized                 {"params", "bytes"}: the weights stored in 8 / 4 bits and their bytes with scales (0 in
                            bf16 / fp32)
  kv_cache                  {"bytes_per_token", "bytes_at_context"}
  working_memory            {"activation_bytes_per_token", "cuda_context_bytes", "bytes_per_gpu_at_context"}
  gpus                      [{"index", "total_bytes", "weight_cap_bytes", "weight_bytes", "kv_bytes",
                              "working_bytes", "free_bytes" (negative: over), "layers": [decoder layer indices],
                              "modules": [other modules, e.g. "embed_tokens", "lm_head"]}]
  spilled                   {"bytes", "modules"}: weights with no room on the GPUs (the loader refuses them)
  device_map                {module: GPU index | "cpu" | "disk"}, as from_pretrained(device_map="auto") computes it
  max_context               longest context that fits (0: the weights do not fit), at most the model's window
  max_position_embeddings   the model's window (0: unknown)
  verdict                   "fits" | "fits with N GPUs" | "needs bf16" | "needs 8-bit" | "needs 4-bit" |
                            "does not fit" | "no GPU detected"
  gpus_needed               GPUs of the largest given size this dtype needs (null: more than 16, or no GPU)
  advice                    one line saying what to do (int8/int4 of other MoE types: that their experts stay bf16)
  rule_of_thumb_bytes       the seed tutorials' 2 x 1.2 x total params, for comparison
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import MoEChatError
from common.settings import Settings
from model_loader.registry import ModelSpec, Registry, load_registry
from planner.format import format_table, to_json
from planner.gpus import detected_gpus, parse_gpus
from planner.planning import (
    DEFAULT_CONTEXT,
    DTYPES,
    PlanError,
    config_for_spec,
    facts_cache_dir,
    human_bytes,
    model_facts,
    plan_memory,
    read_config,
    stored_dtype,
)

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def _fetch_modelscope(repo: str, settings: Settings) -> Path:
    from modelscope.hub.file_download import model_file_download

    return Path(model_file_download(repo, "config.json", cache_dir=str(settings.cache_dir)))


def _fetch_huggingface(repo: str, settings: Settings) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo, "config.json", cache_dir=str(settings.cache_dir / "huggingface")))


FETCHERS: dict[str, Callable[[str, Settings], Path]] = {"modelscope": _fetch_modelscope,
                                                        "huggingface": _fetch_huggingface}


def fetch_config(repo: str, settings: Settings, sources: tuple[str, ...] = ("modelscope", "huggingface")) -> dict:
    """config.json alone from the first hub that has it."""
    failures = []
    for source in sources:
        try:
            return read_config(FETCHERS[source](repo, settings))
        except PlanError:
            raise
        except Exception as exc:  # the hub clients raise many types; translated here
            first = (str(exc).strip().splitlines() or [""])[0][:100]
            failures.append(f"{source}: {type(exc).__name__} {first}".strip())
    raise PlanError(f"Could not fetch config.json of {repo!r} ({'; '.join(failures)}). Check the id, the network and "
                    "MODELSCOPE_ENDPOINT / HF_ENDPOINT, or give a local folder.")


def _spec_config(spec: ModelSpec, settings: Settings) -> dict:
    try:
        return config_for_spec(spec)
    except PlanError:
        if spec.source == "local":
            raise
        repo = spec.modelscope_id if spec.source == "modelscope" else spec.hf_id
        return fetch_config(repo or spec.id, settings, (spec.source,))


def resolve_config(model: str, registry: Registry, settings: Settings) -> tuple[str, dict[str, Any]]:
    """(label, config dict) for MODEL: registry id, folder or config.json path, or hub id."""
    if model in registry.ids:
        return model, _spec_config(registry.get(model), settings)
    path = Path(model).expanduser()
    if path.exists():
        return str(path), read_config(path)
    for spec in registry.specs:
        if model.lower() in {(spec.modelscope_id or "").lower(), (spec.hf_id or "").lower()}:
            return model, _spec_config(spec, settings)
    if _HUB_ID.fullmatch(model):
        return model, fetch_config(model, settings)
    raise PlanError(f"{model!r} is not a registry id ({', '.join(registry.ids)}), an existing folder or config.json, "
                    "or a hub id like owner/name.")


def _no_gpu_note(weight_bytes: int, dtype: str) -> str:
    import psutil

    ram = psutil.virtual_memory().total
    return (f"No GPU detected: planned without GPUs. This machine has {human_bytes(ram)} of RAM; the {dtype} weights "
            f"alone take {human_bytes(weight_bytes)}.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m planner.cli",
                                     description="Will a (MoE) model fit these GPUs? Reads only its config.json.")
    parser.add_argument("model", metavar="MODEL", help="registry id, ModelScope/HF id, or folder / config.json path")
    parser.add_argument("--gpus", type=parse_gpus, help="GPU sizes, e.g. 2x24GiB or 24GiB,80GiB (default: this "
                                                        "machine's GPUs)")
    parser.add_argument("--dtype", choices=DTYPES, default="bf16", help="weights dtype (default bf16)")
    parser.add_argument("--context", type=int, help=f"tokens of context (default {DEFAULT_CONTEXT}, at most the "
                                                    "model's window)")
    parser.add_argument("--json", action="store_true", help="print the documented JSON object instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        label, config = resolve_config(args.model, load_registry(settings.models_file), settings)
        facts = model_facts(config, facts_cache_dir(settings))
        gpus = args.gpus if args.gpus is not None else detected_gpus()
        result = plan_memory(facts, stored_dtype(config) or args.dtype, gpus, args.context)
    except MoEChatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(to_json(result, label), indent=2))
    else:
        print(format_table(result, label))
        if not gpus:
            print(_no_gpu_note(result.weight_bytes, result.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
