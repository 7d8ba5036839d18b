"""Which dtype the CPU path should use: load time and greedy decode speed of the demo model, float32 vs bfloat16.

    python bench/bench_cpu_dtype.py [--tokens 300] [--runs 5] [--quick]

--quick (30 tokens, 1 run, seconds) only shows that it still runs.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import options  # noqa: E402  (bench/options.py, beside this script)


def main() -> None:
    args = options.parse(__doc__, {"tokens": 300, "runs": 5}, quick={"tokens": 30, "runs": 1})

    import torch

    from chat_engine.engine import Engine
    from chat_engine.params import GenerationParams
    from common.settings import Settings
    from model_loader.registry import load_registry

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
