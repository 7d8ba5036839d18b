"""The remote backend against one real vLLM server (CPU build, the demo model), side by side in one run.

    python bench/bench_remote.py [--runs 15] [--tokens 500] [--users 8] [--messages 5] [--quick]

1. One answer of --tokens tokens (ignore_eos), streamed to the page (`streamlit run app.py`, a session speaking
   the page's websocket protocol, send to the answer drawn whole) vs streamed by the raw `openai` client from the
   same server; --runs of each, interleaved; medians and their ratio (page / raw).
2. --users simulated users, --messages each, all at once through the page: once with the page on the vLLM server
   (it batches), once with the demo loaded in-process (one answer at a time); answers per second for each. Every
   answer must be the demo's known answer to that user's prompt.

vLLM comes from its own venv (.venv-vllm, or MOE_CHAT_VLLM_VENV; `bash scripts/test.sh` makes it) and serves a
widened copy of the demo that computes the same function (tests/support/widen_demo.py). On a machine with two or
more cores, vLLM (all its processes) runs on the first core and the app and its clients on the others, as
the server and the app would be on separate machines: vLLM's CPU threads spin-wait on each other, so any work
beside them on their cores slows them down, which says nothing about a GPU server. The in-process runs get the
same cores as the app does. --quick: 1 run of 50 tokens, 2 users x 1 message.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import load_test
import options
from streamlit_ws import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.helpers import DEMO_DIR  # noqa: E402 - the repository root is on the path only now
from tests.support.model_servers import VLLM_KEY, VllmServer, vllm_available  # noqa: E402
from tests.support.widen_demo import widen_demo  # noqa: E402

PROMPT = "Tell me a story."


def page_answer_s(url: str, timeout_s: float) -> tuple[float, int]:
    """Seconds from send to the page drawing the whole answer, in a new tab; and the answer's length."""
    async def ask() -> tuple[float, int]:
        session = await Session.open(url, timeout_s)
        try:
            reply = await session.ask(PROMPT, timeout_s)
        finally:
            await session.close()
        return reply.latency_s, len(reply.text)

    return asyncio.run(ask())


def raw_answer_s(server: VllmServer, tokens: int) -> tuple[float, int]:
    """The same request streamed by the official client alone."""
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key=VLLM_KEY, max_retries=0)
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": PROMPT}], stream=True, max_tokens=tokens,
        temperature=0.0, top_p=1.0, stream_options={"include_usage": True},
        extra_body={"top_k": -1, "repetition_penalty": 1.0, "ignore_eos": True})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed, len(text)


def rows(server: VllmServer, tokens: int) -> str:
    key = {"api_key_env": "BENCH_VLLM_KEY"}
    return (server.row("remote", preload=True, **key)
            + server.row("long", generation={"ignore_eos": True, "max_new_tokens": tokens}, preload=True, **key))


def side_by_side(server: VllmServer, home: Path, runs: int, tokens: int, timeout_s: float) -> None:
    env = {"MOE_CHAT_MODELS_FILE": str(home / "models.toml"), "MOE_CHAT_DEFAULT_MODEL": "long",
           "BENCH_VLLM_KEY": VLLM_KEY}
    proc, url = load_test.start_server(home / "page-long", env)
    try:
        page_answer_s(url, timeout_s)  # warm-up: the page connects to the server with its first session
        page, raw = [], []
        for _ in range(runs):
            seconds, page_chars = page_answer_s(url, timeout_s)
            page.append(seconds)
            seconds, raw_chars = raw_answer_s(server, tokens)
            raw.append(seconds)
            if page_chars != raw_chars:
                raise SystemExit(f"the page's answer ({page_chars} chars) differs from the raw stream's ({raw_chars})")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    p, r = statistics.median(page), statistics.median(raw)
    print(f"{tokens}-token answer from vLLM, median of {runs}: page {p:.3f} s, raw openai client {r:.3f} s")
    pairs = " ".join(f"{a / b:.2f}" for a, b in zip(page, raw, strict=True))
    print(f"page / raw = {p / r:.3f} (each pair: {pairs})")


def users(home: Path, env: dict[str, str], n_users: int, messages: int, timeout_s: float) -> tuple[int, int, float]:
    proc, url = load_test.start_server(home, env)
    try:
        asyncio.run(load_test.run(url, 1, 1, timeout_s))  # warm-up: the model loads (or connects) first
        started = time.perf_counter()
        results = asyncio.run(load_test.run(url, n_users, messages, timeout_s))
        wall = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return sum(r["ok"] for r in results), len(results), wall


def main() -> None:
    args = options.parse(__doc__, {"runs": 15, "tokens": 500, "users": 8, "messages": 5, "timeout": 180.0},
                         quick={"runs": 1, "tokens": 50, "users": 2, "messages": 1})
    if not vllm_available():
        raise SystemExit("vLLM's CPU build is not installed: run `bash scripts/test.sh` (it makes .venv-vllm)")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        cores = sorted(os.sched_getaffinity(0))
        split = len(cores) > 1
        if split:
            os.sched_setaffinity(0, cores[:1])  # vLLM's processes inherit the first core
        server = VllmServer(home, widen_demo(DEMO_DIR, home / "demo-widened"),
                            cores=str(cores[0]) if split else None).start()
        if split:
            os.sched_setaffinity(0, cores[1:])  # this process, and the app servers it starts from now on
        print(f"vLLM ready in {time.perf_counter() - started:.1f} s"
              + (f"; vLLM computes on core {cores[0]}, the app and its clients on {cores[1:]}" if split else ""))
        try:
            (home / "models.toml").write_text(rows(server, args.tokens))
            side_by_side(server, home, args.runs, args.tokens, args.timeout)
            remote_env = {"MOE_CHAT_MODELS_FILE": str(home / "models.toml"), "MOE_CHAT_DEFAULT_MODEL": "remote",
                          "BENCH_VLLM_KEY": VLLM_KEY}
            outcomes = {"vLLM": users(home / "users-vllm", remote_env, args.users, args.messages, args.timeout),
                        "in-process": users(home / "users-local", {}, args.users, args.messages, args.timeout)}
        finally:
            server.stop()
    for name, (ok, total, wall) in outcomes.items():
        print(f"{args.users} users x {args.messages} messages through the page, {name}: {ok}/{total} correct in "
              f"{wall:.1f} s = {ok / wall:.2f} answers/s")
    sys.exit(0 if all(ok == total for ok, total, _ in outcomes.values()) else 1)


if __name__ == "__main__":
    main()
