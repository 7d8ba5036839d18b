"""Benchmarks cannot rot: every script in bench/ runs in its quick mode and prints its numbers."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.helpers import ROOT

pytestmark = pytest.mark.slow

# What each script's quick run must print; a new script in bench/ fails the test below until it is listed here.
EXPECTED = {
    "bench_streaming.py": [r"streamed / plain = [\d.]+", r"page / plain\s+= [\d.]+",
                           r"page: \d+ messages, \d+ kB per answer"],
    "bench_decode.py": [rf"decode {kernel:10s} on \S+ \w+: first token [\d.]+ ms, \d+ tokens/s"
                        for kernel in ("eager", "batched_mm", "grouped_mm")],
    "flood.py": [r"victim latency: [\d.]+ s alone, [\d.]+ s under a flood of 8 sessions from one address",
                 r"flood: \d+ answered, \d+ refused"],
    "bench_cpu_dtype.py": [r"float32 +\d+ tokens/s", r"bfloat16 +\d+ tokens/s"],
    "soak_conversation.py": [r"30 turns, context 128 tokens; at the end [1-9]\d* earlier turns were not sent",
                             r"turn 20: \d+ threads, \d+ MiB; turn 30: \d+ threads, \d+ MiB"],
    "bench_api.py": [r"MoE Chat API: latency p50 [\d.]+ ms for a 24-token answer \(4 requests\)",
                     r"transformers serve: latency p50 [\d.]+ ms", r"latency ours / theirs = [\d.]+",
                     r"MoE Chat API: 2 clients x 2: 4/4 correct in [\d.]+ s = [\d.]+ answers/s",
                     r"transformers serve: 2 clients x 2: 4/4 correct in [\d.]+ s = [\d.]+ answers/s"],
    "bench_routing.py": [r"60-token answers, median of 2: recording off \d+ tokens/s, on \d+ tokens/s \(2 layers",
                         r"on / off = [\d.]+"],
    "bench_quantized.py": [r"40-token demo answers on cpu, median of 2: fused bf16 \d+ tokens/s, per-expert nf4 \d+ "
                           r"tokens/s", r"nf4 / bf16 speed = [\d.]+",
                           r"routed experts: fused bf16 864 KiB, per-expert nf4 274 KiB \(3.15x smaller\)"],
    "bench_remote.py": [r"50-token answer from vLLM, median of 1: page [\d.]+ s, raw openai client [\d.]+ s",
                        r"page / raw = [\d.]+",
                        r"2 users x 1 messages through the page, vLLM: 2/2 correct in [\d.]+ s = [\d.]+ answers/s",
                        r"2 users x 1 messages through the page, in-process: 2/2 correct in [\d.]+ s = [\d.]+ "
                        r"answers/s"],
    "bench_search.py": [r"index built in [\d.]+ s \(\d+ resumable steps\): database [\d.]+ MiB with it",
                        r"'混合专家' \(index\): p50 [\d.]+ ms, p95 [\d.]+ ms, [1-9]\d* hits",
                        r"'显卡' \(LIKE\): p50 [\d.]+ ms, p95 [\d.]+ ms, [1-9]\d* hits",
                        r"search over 3,000 messages: p50 [\d.]+ ms, p95 [\d.]+ ms \(target p95 <= 300 ms: met\)"],
    "load_test.py": [r"2 users x 1 messages in [\d.]+ s: 2/2 answers complete and correct, 0 failed",
                     r"latency \(send to full answer\): p50 [\d.]+ s", r"queue: \d+/2 requests waited in line",
                     r"server memory: \d+ MiB before, \d+ MiB after"],
}


def scripts() -> list[str]:
    """The runnable scripts of bench/ (modules they import, such as streamlit_ws.py, have no __main__)."""
    return sorted(p.name for p in (ROOT / "bench").glob("*.py") if '__name__ == "__main__"' in p.read_text())


def test_every_bench_script_has_a_quick_run_listed_here():
    assert scripts() == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_quick_mode_runs_and_prints_its_numbers(script):
    run = subprocess.run([sys.executable, f"bench/{script}", "--quick"], cwd=ROOT, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    for pattern in EXPECTED[script]:
        assert re.search(pattern, run.stdout), f"{pattern!r} not in:\n{run.stdout}"
