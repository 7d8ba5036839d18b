"""The cost of recording which experts each token used: demo tokens/s with recording on vs off, side by side.

    python bench/bench_routing.py [--tokens 500] [--runs 7] [--quick]

One torch thread; --runs answers of --tokens tokens (ignore_eos) each way, taking turns, through the engine exactly as
the page asks (the same reply, streamer and hand-overs); median tokens/s of each and their ratio (on / off).
With recording off the code path is today's: no hook is installed (checked here). --quick: 2 runs of 60 tokens.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import options

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    args = options.parse(__doc__, {"tokens": 500, "runs": 7}, quick={"tokens": 60, "runs": 2})
    import torch

    from chat_engine.engine import Engine
    from chat_engine.params import GenerationParams
    from chat_engine.transformers_backend.routing import find_routers
    from common.settings import Settings
    from model_loader.registry import load_registry

    torch.set_num_threads(1)
    engine = Engine(Settings(device="cpu"))
    engine.load(load_registry().get("demo-moe"))
    routers = find_routers(engine.backend.loaded.model)
    params = GenerationParams(max_new_tokens=args.tokens, ignore_eos=True)
    ask = [{"role": "user", "content": "Tell me a story."}]
    rates: dict[bool, list[float]] = {False: [], True: []}
    layers = 0
    for _ in range(args.runs + 1):  # the first round warms up
        for routing in (False, True):
            reply = engine.chat(ask, params, routing=routing)
            reply.text()
            if any(r._forward_hooks for r in routers):
                raise SystemExit("a hook was left on a router")
            rates[routing].append(reply.result.tokens_per_s or 0.0)
            if routing:
                layers = reply.routing.layers
    engine.close()
    off, on = statistics.median(rates[False][1:]), statistics.median(rates[True][1:])
    print(f"{args.tokens}-token answers, median of {args.runs}: recording off {off:.0f} tokens/s, "
          f"on {on:.0f} tokens/s ({layers} layers recorded)")
    print(f"on / off = {on / off:.3f}")


if __name__ == "__main__":
    main()
