"""Writes messages through ConversationStore as fast as it can, reporting each commit; the kill test SIGKILLs it.

Usage: python -m tests.support.store_writer DB_PATH. After each committed message it prints `<n> <conv id>`, where
message n's content starts with `message <n> `; every tenth message starts a new conversation first.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from conversations.store import ConversationStore


def content(n: int) -> str:
    """Message n's text: some long (so the kill often lands mid-write), with unicode and a code block."""
    body = "長い返事 🚀 " * 4000 if n % 7 == 0 else "short reply"
    return f"message {n} {body}\n```python\nprint({n})\n```"


def main(path: Path) -> None:
    store = ConversationStore(path)
    conv_id = ""
    for n in itertools.count():
        if n % 10 == 0:
            conv_id = store.create(model_id="demo-moe", params={"temperature": 0.7})
        role = "user" if n % 2 == 0 else "assistant"
        store.add_message(conv_id, role, content(n), stats={"n": n, "tokens_per_s": 12.5}, partial=n % 5 == 4)
        print(n, conv_id, flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
