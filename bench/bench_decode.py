"""Decode speed of the app's own path per experts kernel: time to first token and tokens/s of the demo model.

    python bench/bench_decode.py [--tokens 200] [--runs 3] [--quick]

Loads the bundled demo model through the engine (bf16 on a GPU, the CPU dtype setting on CPU) once per experts
kernel (eager, batched_mm, grouped_mm) and streams a fixed-length answer through `Engine.chat`, as the page does.
Prints one line per kernel: median time to first token and decode tokens/s. On CPU it only shows the kernels run;
`bash scripts/gpu_check.sh` runs it on a GPU. --quick: 20 tokens, 1 run (seconds).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import options  # noqa: E402  (bench/options.py, beside this script)

KERNELS = ("eager", "batched_mm", "grouped_mm")
PROMPT = [{"role": "user", "content": "Tell me a story."}]


def main() -> None:
    args = options.parse(__doc__, {"tokens": 200, "runs": 3}, quick={"tokens": 20, "runs": 1})

    from chat_engine.engine import Engine
    from chat_engine.params import GenerationParams
    from common.settings import Settings
    from model_loader.placement import LoadOptions
    from model_loader.registry import load_registry

    spec = load_registry(None).get("demo-moe")
    params = GenerationParams(max_new_tokens=args.tokens, ignore_eos=True)
    for kernel in KERNELS:
        engine = Engine(Settings.from_env())
        try:
            engine.load(spec, LoadOptions(experts=kernel))
            loaded = engine.backend.loaded
            engine.chat(PROMPT, params).text()  # warm-up: kernels compile or autotune on first use
            first, rates = [], []
            for _ in range(args.runs):
                stream = engine.chat(PROMPT, params)
                stream.text()
                assert stream.result.new_tokens == args.tokens, stream.result
                first.append(stream.result.time_to_first_token_s)
                rates.append(stream.result.tokens_per_s)
            print(f"decode {kernel:10s} on {loaded.model.device} {str(loaded.model.dtype).removeprefix('torch.')}: "
                  f"first token {statistics.median(first) * 1000:.1f} ms, {statistics.median(rates):.0f} tokens/s "
                  f"({args.tokens} tokens, median of {args.runs})", flush=True)
        finally:
            engine.close()


if __name__ == "__main__":
    main()
