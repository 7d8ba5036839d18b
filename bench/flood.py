"""Flood: one address opens many sessions and asks at once; how long does another address wait for its answer?

    python bench/flood.py [--hostile 50] [--quick]

Starts `streamlit run app.py` on a loopback port with the demo model (as the load test does). The victim, connecting
from 127.0.0.2, asks "Hello" alone first (baseline), then again while --hostile sessions from 127.0.0.3 each ask for a
story at the same moment. Prints both latencies and their ratio, and what the hostile sessions got. The line in front
of the model is fair between addresses and caps what one address may hold, so the ratio stays small. Loopback only;
bounded in count and time. --quick: 8 hostile sessions.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import options
from load_test import ANSWERS, start_server
from streamlit_ws import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VICTIM, HOSTILE = "127.0.0.2", "127.0.0.3"  # not 127.0.0.1: Streamlit gives localhost no address


async def victim_latency(url: str, timeout_s: float) -> float:
    victim = await Session.open(url, timeout_s, source=VICTIM)
    try:
        reply = await victim.ask("Hello", timeout_s)
        assert reply.text == ANSWERS["Hello"], reply.text
        return reply.latency_s
    finally:
        await victim.close()


async def flooded(url: str, hostile: int, timeout_s: float) -> tuple[float, dict[str, int]]:
    sessions = await asyncio.gather(*(Session.open(url, timeout_s, source=HOSTILE) for _ in range(hostile)))
    outcomes = {"answered": 0, "refused": 0}

    async def attack(session: Session) -> None:
        try:
            reply = await session.ask("Tell me a story.", timeout_s)
            outcomes["answered" if reply.text == ANSWERS["Tell me a story."] else "refused"] += 1
        except Exception:  # a session the server dropped counts as refused
            outcomes["refused"] += 1

    attacks = [asyncio.create_task(attack(s)) for s in sessions]
    await asyncio.sleep(0.5)  # the flood is in line
    latency = await victim_latency(url, timeout_s)
    await asyncio.gather(*attacks)
    for session in sessions:
        await session.close()
    return latency, outcomes


def main() -> None:
    args = options.parse(__doc__, {"hostile": 50, "timeout": 120.0}, quick={"hostile": 8})
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            asyncio.run(victim_latency(url, args.timeout))  # warm-up: the model loads with the first session
            alone = asyncio.run(victim_latency(url, args.timeout))
            latency, outcomes = asyncio.run(flooded(url, args.hostile, args.timeout))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"victim latency: {alone:.2f} s alone, {latency:.2f} s under a flood of {args.hostile} sessions from one "
          f"address (ratio {latency / alone:.1f})")
    print(f"flood: {outcomes['answered']} answered, {outcomes['refused']} refused (line full)")


if __name__ == "__main__":
    main()
