"""The app's OpenAI-compatible API vs `transformers serve`, on the same demo model, side by side in one run.

    python bench/bench_api.py [--requests 40] [--clients 4] [--per-client 10] [--quick]

Starts `streamlit run app.py` with MOE_CHAT_API_KEY set (the demo loads at start) and `transformers serve` pinned to
the demo checkpoint (its default mode), then, with the official `openai` client:
1. latency: --requests greedy answers to "Who are you?" (24 tokens), one at a time, the two servers taking turns;
   p50 of each and their ratio (ours / theirs);
2. throughput: --clients clients at once, --per-client requests each (the demo's known prompts), per server;
   answers per second. Every answer must be the demo's known answer to its prompt.
--quick: 4 requests, 2 clients x 2.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import load_test
import openai
import options

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.model_servers import TransformersServe  # noqa: E402 - the repository root is on the path now

KEY = "bench-api-key"
ANSWERS = load_test.ANSWERS


def ask(client: openai.OpenAI, model: str, prompt: str) -> tuple[float, str]:
    started = time.perf_counter()
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                           temperature=0, max_tokens=256)
    return time.perf_counter() - started, reply.choices[0].message.content or ""


def throughput(client: openai.OpenAI, model: str, clients: int, per_client: int) -> tuple[int, int, float]:
    prompts = list(ANSWERS)
    results: list[bool] = []

    def one(c: int) -> None:
        for i in range(per_client):
            prompt = prompts[(c + i) % len(prompts)]
            results.append(ask(client, model, prompt)[1] == ANSWERS[prompt])

    threads = [threading.Thread(target=one, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(results), len(results), time.perf_counter() - started


def main() -> None:
    args = options.parse(__doc__, {"requests": 40, "clients": 4, "per_client": 10},
                         quick={"requests": 4, "clients": 2, "per_client": 2})
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        proc, url = load_test.start_server(home / "app", {"MOE_CHAT_API_KEY": KEY})
        theirs = TransformersServe(home).start()
        try:
            ours = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120)
            deadline = time.monotonic() + 60
            while not ours.models.list().data:
                if time.monotonic() > deadline:
                    raise SystemExit("the app did not load the demo at start")
                time.sleep(0.3)
            servers = {"MoE Chat API": (ours, "demo-moe"),
                       "transformers serve": (openai.OpenAI(base_url=theirs.base_url, api_key="none", max_retries=0,
                                                            timeout=120), theirs.model)}
            for client, model in servers.values():  # warm-up
                ask(client, model, "Hello")
            latencies: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(args.requests):
                for name, (client, model) in servers.items():
                    seconds, text = ask(client, model, "Who are you?")
                    if text != ANSWERS["Who are you?"]:
                        raise SystemExit(f"{name} answered {text[:80]!r}")
                    latencies[name].append(seconds)
            rates = {name: throughput(client, model, args.clients, args.per_client)
                     for name, (client, model) in servers.items()}
        finally:
            theirs.stop()
            proc.terminate()
            proc.wait(timeout=30)
    p50 = {name: statistics.median(values) for name, values in latencies.items()}
    for name, value in p50.items():
        print(f"{name}: latency p50 {value * 1000:.1f} ms for a 24-token answer ({args.requests} requests)")
    print(f"latency ours / theirs = {p50['MoE Chat API'] / p50['transformers serve']:.2f}")
    for name, (ok, total, wall) in rates.items():
        print(f"{name}: {args.clients} clients x {args.per_client}: {ok}/{total} correct in {wall:.2f} s = "
              f"{ok / wall:.1f} answers/s")
    sys.exit(0 if all(ok == total for ok, total, _ in rates.values()) else 1)


if __name__ == "__main__":
    main()
