"""Benchmark: what streaming and the page cost on top of a plain `model.generate`.

Runs on the bundled demo model with one torch thread (timings on 2 cores are noisy otherwise) and
prints medians as ratios against plain generate measured in the same run:

    python bench/bench_streaming.py [--tokens 1000] [--runs 15] [--quick]

--quick (100 tokens, 2 runs, a few seconds) only shows that every path still runs; its ratios mean nothing.

Paths measured, each producing exactly --tokens new tokens for the same prompt:
  plain     model.generate(...) with the same generation config, no streamer
  streamed  Engine.chat(...) consumed to the end (worker thread + TextIteratorStreamer)
  page      the page's render path: components.chat.stream_reply drawing into a real Streamlit
            script-run context, every message serialized as the server would send it
These are CPU timings of a 0.7M-parameter toy: ratios carry over, absolute tokens/s do not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import options  # noqa: E402  (bench/options.py, beside this script)

PROMPT = [{"role": "user", "content": "Tell me a story."}]


def capture_context(box):  # runs inside AppTest once, to obtain a real script-run context
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    box.append(get_script_run_ctx())


def attach_page_context():
    """Make this thread a Streamlit script thread whose messages are serialized as the server sends them.

    AppTest itself is not used for timing: its main thread polls the script thread every millisecond,
    contention the real server does not have. Here the page's own render function runs in this thread,
    and every message it emits is turned into the bytes that would go to the browser.
    """
    import dataclasses
    import threading

    from streamlit.runtime.scriptrunner_utils.script_run_context import add_script_run_ctx
    from streamlit.testing.v1 import AppTest
    box: list = []
    AppTest.from_function(capture_context, args=(box,)).run()
    sent = {"messages": 0, "bytes": 0}

    def send(msg) -> None:
        sent["messages"] += 1
        sent["bytes"] += len(msg.SerializeToString())

    ctx = dataclasses.replace(box[0], _enqueue=send)
    add_script_run_ctx(threading.current_thread(), ctx)
    return ctx, sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the process to one core")
    args = options.parse(__doc__, {"tokens": 1000, "runs": 15}, quick={"tokens": 100, "runs": 2}, parser=ap)

    import torch

    from chat_engine.engine import Engine
    from chat_engine.params import GenerationParams
    from chat_engine.prompt import encode_prompt
    from chat_engine.transformers_backend.backend import build_generation_config
    from common.settings import Settings
    from model_loader.registry import load_registry

    torch.set_num_threads(1)
    if args.pin and hasattr(os, "sched_setaffinity"):
        # One core for the whole process: the VM scheduler moving threads between cores was the largest
        # source of run-to-run noise here. Worker and consumer threads still share the GIL as in the app.
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    settings = Settings(device="cpu")
    engine = Engine(settings)
    engine.load(load_registry(None).get("demo-moe"))
    loaded = engine.backend.loaded
    params = GenerationParams(max_new_tokens=args.tokens, ignore_eos=True)
    inputs = encode_prompt(loaded.tokenizer, PROMPT, device=loaded.model.device)
    config = build_generation_config(loaded.model.generation_config, params, loaded.tokenizer)

    def plain() -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            out = loaded.model.generate(**inputs, generation_config=config)
        assert out.shape[1] - inputs["input_ids"].shape[1] == args.tokens
        return time.perf_counter() - started

    def streamed() -> float:
        started = time.perf_counter()
        stream = engine.chat(PROMPT, params)
        for _ in stream:
            pass
        assert stream.result.new_tokens == args.tokens
        return time.perf_counter() - started

    import streamlit as st

    from components import chat
    from components.answer_writer import answer_stats

    ctx, sent = attach_page_context()

    def page() -> float:
        ctx.shared.reset()  # each answer is drawn by a new page run, as in the app: widget keys start afresh
        started = time.perf_counter()
        with st.chat_message("assistant"):  # as the page answers: budget, redraws, then the stats line
            stream = engine.chat(PROMPT, params)
            reply = chat.stream_reply(stream, settings.stream_interval_s)
            st.caption(chat.stats_line(answer_stats(stream, stream.result.finish_reason, params)))
        assert reply.error is None and len(reply.text) > args.tokens
        return time.perf_counter() - started

    paths = {"plain": plain, "streamed": streamed, "page": page}
    for fn in paths.values():  # warm-up: first-call allocations and imports
        fn()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.runs):
        for name, fn in paths.items():  # interleaved, so drift in machine speed hits all paths alike
            times[name].append(fn())
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"demo model, {args.tokens} new tokens, 1 torch thread, median of {args.runs} runs")
    for name, ts in times.items():
        print(f"  {name:9s} median {med[name]:.3f} s  ({args.tokens / med[name]:.0f} tokens/s)  "
              f"runs: {', '.join(f'{t:.3f}' for t in ts)}")
    print(f"streamed / plain = {med['streamed'] / med['plain']:.3f}   (target <= 1.05)")
    print(f"page / plain     = {med['page'] / med['plain']:.3f}   (target <= 1.10)")
    answers = args.runs + 1  # with the warm-up
    print(f"page: {sent['messages'] / answers:.0f} messages, {sent['bytes'] / answers / 1e3:.0f} kB per answer")
    engine.close()


if __name__ == "__main__":
    main()
