"""Which dtype the CPU path should use: load time and greedy decode speed of the demo model, float32 vs bfloat16.

    python bench/bench_cpu_dtype.py [--tokens 300] [--runs 5] [--quick]

--quick (30 tokens, 1 run, seconds) only shows that it still runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="30 tokens, 1 run: checks that it runs, measures nothing")
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.runs = 30, 1

    import torch

    from chat_engine.engine import Engine
    from chat_engine.params import GenerationParams
    from model_loader.registry import load_registry
    from model_loader.settings import Settings

    torch.set_num_threads(1)
    spec = load_registry(None).get("demo-moe")
    prompt = [{"role": "user", "content": "Tell me a story."}]
    params = GenerationParams(max_new_tokens=args.tokens, ignore_eos=True)
    engines = {}
    for dtype in ("float32", "bfloat16"):
        engine = Engine(replace(Settings(device="cpu"), cpu_dtype=dtype))
        started = time.perf_counter()
        engine.load(spec)
        print(f"{dtype:9s} load {time.perf_counter() - started:.2f} s; answer: "
              f"{engine.chat([{'role': 'user', 'content': 'Who are you?'}]).text()[:60]!r}")
        engine.chat(prompt, params).text()  # warm-up
        engines[dtype] = engine
    times: dict[str, list[float]] = {d: [] for d in engines}
    for _ in range(args.runs):
        for dtype, engine in engines.items():
            started = time.perf_counter()
            engine.chat(prompt, params).text()
            times[dtype].append(time.perf_counter() - started)
    for dtype, ts in times.items():
        print(f"{dtype:9s} {args.tokens / statistics.median(ts):.0f} tokens/s (median of {args.runs})")
    for engine in engines.values():
        engine.close()


if __name__ == "__main__":
    main()
