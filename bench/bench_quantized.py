"""Per-expert nf4 experts vs the fused bf16 experts: demo tokens/s and expert bytes, side by side.

    python bench/bench_quantized.py [--tokens 300] [--runs 5] [--device cpu|cuda] [--quick]

One torch thread on the CPU; --runs answers of --tokens tokens (ignore_eos) each way, taking turns, through the engine
as the page asks. The fused model loads in bf16 (the app's default on a GPU); the per-expert one in bitsandbytes nf4
with bf16 compute, as a 4-bit load does. Prints the median tokens/s of each, their ratio, and the routed experts'
bytes as loaded. --device cuda measures the same on the first GPU (scripts/gpu_check.sh runs it there).
--quick: 2 runs of 40 tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import options

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = options.parse(__doc__, {"tokens": 300, "runs": 5}, quick={"tokens": 40, "runs": 2}, parser=parser)
    import torch

    from chat_engine.engine import Engine
    from chat_engine.params import GenerationParams
    from chat_engine.transformers_backend.loader import TransformersLoader
    from common.settings import Settings
    from model_loader.placement import Placement
    from model_loader.registry import load_registry
    from model_loader.weight_bytes import expert_bytes

    torch.set_num_threads(1)
    device_map = "cuda:0" if args.device == "cuda" else None  # the whole demo on the first GPU
    placements = {"fused bf16": Placement(device=args.device, dtype="bfloat16", device_map=device_map),
                  "per-expert nf4": Placement(device=args.device, dtype="bfloat16", device_map=device_map,
                                              quantization="4bit")}
    settings = Settings(device=args.device)
    spec = load_registry().get("demo-moe")
    engines, sizes = {}, {}
    for name, placement in placements.items():
        engines[name] = Engine(settings, loader=lambda _, s, p=placement: TransformersLoader(s, placement=p))
        engines[name].load(spec)
        sizes[name] = expert_bytes(engines[name].backend.loaded.model)
    params = GenerationParams(max_new_tokens=args.tokens, ignore_eos=True)
    ask = [{"role": "user", "content": "Tell me a story."}]
    rates: dict[str, list[float]] = {name: [] for name in placements}
    for _ in range(args.runs + 1):  # the first round warms up
        for name, engine in engines.items():
            reply = engine.chat(ask, params)
            reply.text()
            rates[name].append(reply.result.tokens_per_s or 0.0)
    for engine in engines.values():
        engine.close()
    fused, nf4 = (statistics.median(rates[name][1:]) for name in placements)
    if not fused or not nf4:
        raise SystemExit(f"no tokens/s measured: {rates}")
    print(f"{args.tokens}-token demo answers on {args.device}, median of {args.runs}: fused bf16 {fused:.0f} tokens/s, "
          f"per-expert nf4 {nf4:.0f} tokens/s")
    print(f"nf4 / bf16 speed = {nf4 / fused:.3f}")
    print(f"routed experts: fused bf16 {sizes['fused bf16'] / 1024:.0f} KiB, per-expert nf4 "
          f"{sizes['per-expert nf4'] / 1024:.0f} KiB ({sizes['fused bf16'] / sizes['per-expert nf4']:.2f}x smaller)")


if __name__ == "__main__":
    main()
