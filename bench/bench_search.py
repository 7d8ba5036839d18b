"""Search over saved conversations: query time (p50, p95) and index size over many messages, English and Chinese.

    python bench/bench_search.py [--messages 100000] [--repeats 20] [--quick]

Writes a database of `messages` messages of about 300 characters (conversations of 20, half English, half Chinese,
a few phrases planted at known rates), builds the trigram index the way the app does (resumable steps), then runs
each kind of query `repeats` times through ConversationStore.search: an English word, an English phrase, a
3-character Chinese phrase (the index), a 2-character Chinese word (below the trigram: LIKE), an English word and
a Chinese word together. The target is p95 <= 300 ms over 100,000 messages. --quick (3,000 messages, 3 repeats,
seconds) only shows that it still runs.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import options  # noqa: E402  (bench/options.py, beside this script)

ENGLISH = ("the router sends every token to two experts while a shared expert sees them all and the load balancing "
           "loss keeps the experts busy so that no single expert is overloaded during training or inference of the "
           "model on a rented card with twenty four gigabytes of memory").split()
CHINESE = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后"
PLANTED = {"mixture of experts": 0.01, "quantization": 0.002, "混合专家": 0.01, "显卡": 0.02}  # share of messages
QUERIES = ("quantization", '"mixture of experts"', "混合专家", "显卡", "experts 显卡")


def text(rng: random.Random, chinese: bool) -> str:
    if chinese:
        body = "".join(rng.choice(CHINESE) for _ in range(150)) + "。"
    else:
        body = " ".join(rng.choice(ENGLISH) for _ in range(50)) + "."
    for phrase, share in PLANTED.items():
        if rng.random() < share:
            at = rng.randrange(len(body))
            body = body[:at] + f" {phrase} " + body[at:]
    return body


def fill(path: Path, messages: int) -> None:
    from conversations.store import ConversationStore

    ConversationStore(path).close()  # the schema, as the app makes it
    rng = random.Random(7)
    rows, conversations = [], []
    for n in range(1, messages + 1):
        conv = f"c{(n - 1) // 20:06d}"
        if (n - 1) % 20 == 0:
            conversations.append((conv, f"Conversation {conv}", float(n), float(n), n + 19))
        rows.append((n, conv, None if (n - 1) % 20 == 0 else n - 1, "user" if n % 2 else "assistant",
                     text(rng, chinese=(n // 20) % 2 == 1), float(n)))
    with sqlite3.connect(path) as raw:
        raw.executemany("INSERT INTO conversations (id, title, created_at, updated_at, active_leaf) "
                        "VALUES (?, ?, ?, ?, ?)", conversations)
        raw.executemany("INSERT INTO messages (id, conversation_id, parent_id, role, content, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)", rows)
    raw.close()


def mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20


def main() -> None:
    args = options.parse(__doc__, {"messages": 100_000, "repeats": 20}, quick={"messages": 3_000, "repeats": 3})
    from conversations.search import terms_of
    from conversations.store import ConversationStore

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "conversations.db"
        started = time.perf_counter()
        fill(path, args.messages)
        print(f"wrote {args.messages:,} messages in {time.perf_counter() - started:.1f} s: {mib(path):.1f} MiB")
        with ConversationStore(path) as store:
            started = time.perf_counter()
            steps = 1
            while not store.index.build_step():
                steps += 1
            built = time.perf_counter() - started
            with_index = mib(path)
            print(f"index built in {built:.1f} s ({steps} resumable steps): database {with_index:.1f} MiB with it")
            timings: list[float] = []
            for query in QUERIES:
                times = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    hits = store.search(query)
                    times.append((time.perf_counter() - started) * 1000)
                timings += times
                lengths = [len(t) >= 3 for t in terms_of(query)]
                way = "index" if all(lengths) else "index + LIKE" if any(lengths) else "LIKE"
                print(f"  {query!r} ({way}): p50 {statistics.median(times):.1f} ms, "
                      f"p95 {percentile(times, 95):.1f} ms, {len(hits)} hits")
                assert hits, f"{query!r} found nothing: the planted phrases are missing"
            p95 = percentile(timings, 95)
            print(f"search over {args.messages:,} messages: p50 {statistics.median(timings):.1f} ms, p95 {p95:.1f} ms "
                  f"(target p95 <= 300 ms: {'met' if p95 <= 300 else 'NOT met'})")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


if __name__ == "__main__":
    main()
