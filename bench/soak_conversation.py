"""Soak: one long conversation through the engine with context truncation active.

    python bench/soak_conversation.py [--turns 200] [--context 256] [--quick]

Each turn sends the whole history; once it outgrows --context tokens the oldest turns are left out. Prints live
threads and process memory at turn 20 and at the end: neither should grow (memory within 10%). --quick runs 30 turns
with a 128-token context (seconds): truncation still happens, the numbers say little.
"""

from __future__ import annotations

import gc
import sys
import threading
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import options  # noqa: E402  (bench/options.py, beside this script)

PROMPTS = ["Hello", "Who are you?", "What is 2 + 2?", "What can you do?", "What is a mixture of experts?"]


def main() -> None:
    args = options.parse(__doc__, {"turns": 200, "context": 256}, quick={"turns": 30, "context": 128})
    if args.turns < 20:
        raise SystemExit("--turns must be at least 20 (memory is compared with turn 20)")

    import psutil
    import torch

    from chat_engine.engine import Engine
    from chat_engine.params import GenerationParams
    from common.settings import Settings
    from model_loader.registry import load_registry

    torch.set_num_threads(1)
    engine = Engine(replace(Settings(device="cpu"), max_context=args.context))
    engine.load(load_registry(None).get("demo-moe"))
    params = GenerationParams(max_new_tokens=64)
    history: list[dict[str, str]] = []
    marks: dict[int, tuple[int, float]] = {}
    dropped = 0
    for turn in range(1, args.turns + 1):
        history.append({"role": "user", "content": PROMPTS[turn % len(PROMPTS)]})
        stream = engine.chat(history, params, owner="soak")
        history.append({"role": "assistant", "content": stream.text()})
        dropped = stream.budget.dropped_turns
        if turn in (20, args.turns):
            gc.collect()
            marks[turn] = (threading.active_count(), psutil.Process().memory_info().rss / 2**20)
    (t20, m20), (tn, mn) = marks[20], marks[args.turns]
    print(f"{args.turns} turns, context {args.context} tokens; at the end {dropped} earlier turns were not sent")
    print(f"turn 20: {t20} threads, {m20:.0f} MiB; turn {args.turns}: {tn} threads, {mn:.0f} MiB "
          f"({mn / m20 - 1:+.1%})")
    engine.close()


if __name__ == "__main__":
    main()
