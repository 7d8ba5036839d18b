"""Load test: N simulated users, each sending M messages to one app server at once.

    python bench/load_test.py [--users 8] [--messages 5] [--timeout 120] [--quick]

Starts `streamlit run app.py` on a free loopback port (its own temporary database and config) and opens N
sessions on it that speak the page's own websocket protocol (bench/streamlit_ws.py): to the server each is
a browser tab, but nothing renders, so 8 users do not starve a 2-core machine of the CPU the server needs.
Every user sends M of the demo model's known prompts, each user in a different order, all at the same time, in
one conversation per user. An answer counts as completed only if it is exactly the demo's known answer to that
user's own prompt (so cross-talk between sessions is a failure). Reports completed / failed, latency percentiles
(send to full answer), time to first text (which includes waiting in the model's queue), how many requests waited
in line, and the server's memory before and after. Loopback only; bounded in count and time. --quick: 2 users x 1
message, to show that it still runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import options
from streamlit_ws import Session

ROOT = Path(__file__).resolve().parent.parent
DIALOGUES = json.loads((ROOT / "scripts" / "demo_dialogues.json").read_text())["dialogues"]
ANSWERS = {d["prompt"]: d["answer"] for d in DIALOGUES}


def start_server(home: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` on a free loopback port, with its own database and config (and `env` on top)."""
    home.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MOE_CHAT_DB=str(home / "conversations.db"), XDG_CONFIG_HOME=str(home / "config"),
               MOE_CHAT_DEVICE="cpu", HF_HUB_OFFLINE="1", **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1"], cwd=ROOT, env=env,
                            stdout=open(home / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"the server did not start; see {home / 'server.log'}")


def rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


async def one_user(url: str, user: int, messages: int, timeout_s: float, results: list[dict]) -> None:
    prompts = [DIALOGUES[(user + i) % len(DIALOGUES)]["prompt"] for i in range(messages)]
    session = await Session.open(url, timeout_s)
    try:
        for prompt in prompts:
            record = {"user": user, "prompt": prompt, "ok": False}
            try:
                reply = await session.ask(prompt, timeout_s)
                record.update(latency_s=reply.latency_s, first_text_s=reply.first_text_s,
                              place=reply.max_place, text=reply.text)
                record["ok"] = reply.role == "assistant" and reply.text == ANSWERS[prompt]
                if not record["ok"]:
                    record["error"] = f"wrong answer: {reply.text[:80]!r}"
            except Exception as exc:  # a missing answer is a failed request, and the user goes on
                record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            results.append(record)
    finally:
        await session.close()  # the tab closes


async def run(url: str, users: int, messages: int, timeout_s: float) -> list[dict]:
    results: list[dict] = []
    await asyncio.wait_for(asyncio.gather(*(one_user(url, u, messages, timeout_s, results) for u in range(users))),
                           timeout=timeout_s * messages + 120)
    return results


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    args = options.parse(__doc__, {"users": 8, "messages": 5, "timeout": 120.0}, quick={"users": 2, "messages": 1})

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            asyncio.run(run(url, 1, 1, args.timeout))  # warm-up: the demo model loads with the first session
            before = rss_mib(proc.pid)
            started = time.perf_counter()
            results = asyncio.run(run(url, args.users, args.messages, args.timeout))
            wall = time.perf_counter() - started
            after = rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    ok = [r for r in results if r["ok"]]
    print(f"{args.users} users x {args.messages} messages in {wall:.1f} s: {len(ok)}/{args.users * args.messages} "
          f"answers complete and correct, {len(results) - len(ok)} failed")
    if ok:
        lat = [r["latency_s"] for r in ok]
        first = [r["first_text_s"] for r in ok]
        print(f"latency (send to full answer): p50 {pct(lat, 50):.2f} s, p90 {pct(lat, 90):.2f} s, "
              f"p99 {pct(lat, 99):.2f} s, max {max(lat):.2f} s")
        print(f"time to first text (incl. queue wait): p50 {pct(first, 50):.2f} s, p90 {pct(first, 90):.2f} s, "
              f"max {max(first):.2f} s")
        waited = [r["place"] for r in ok if r["place"]]
        print(f"queue: {len(waited)}/{len(ok)} requests waited in line (shown as far back as number "
              f"{max(waited, default=0)})")
    print(f"server memory: {before:.0f} MiB before, {after:.0f} MiB after ({after / before - 1:+.1%})")
    for r in results:
        if not r["ok"]:
            print(f"  failed: user {r['user']} {r['prompt']!r}: {r.get('error')}")
    sys.exit(0 if len(ok) == len(results) == args.users * args.messages else 1)


if __name__ == "__main__":
    main()
