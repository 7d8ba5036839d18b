"""The saved conversation's records: plain dataclasses that the store writes and the exporter reads."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from common.routing import Routing


@dataclass(frozen=True)
class StoredMessage:
    """One saved message; `stats` is the generation's numbers, `partial` marks a reply stopped before its end."""

    role: str
    content: str
    stats: dict[str, Any] | None = None
    partial: bool = False
    created_at: float = 0.0
    id: int = 0
    parent_id: int | None = None
    siblings: tuple[int, ...] = ()  # this message and its siblings (edits, regenerated answers), oldest first


@dataclass(frozen=True)
class ConversationSummary:
    """A row of the conversation list."""

    id: str
    title: str
    model_id: str | None
    updated_at: float
    message_count: int  # on every branch
    pinned: bool = False
    folder: str = ""


@dataclass(frozen=True)
class Conversation:
    """A saved conversation with its settings and messages in order; times are seconds since the epoch."""

    id: str
    title: str
    model_id: str | None
    system_prompt: str
    params: dict[str, Any]
    created_at: float
    updated_at: float
    messages: tuple[StoredMessage, ...]  # one branch: from the first message down to `active_leaf`
    revision: int = 0  # grows with every message added or removed: what a tab's view of it was built on
    active_leaf: int | None = None  # the last message of the branch shown
    branches: int = 1  # how many branches (leaves) the conversation has
    pinned: bool = False
    folder: str = ""


@dataclass(frozen=True)
class AnswerStats:
    """How an answer went, shown under it and saved with it."""

    finish_reason: str = ""  # eos | length | stopped | error
    tokens: int = 0
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    sampling: str = ""  # "greedy" or "T 0.7 · top-p 0.8 · top-k 20"
    note: str | None = None  # who stopped it and why, when it was not the reader
    error: str | None = None  # what went wrong and what to do, kept under the answer
    queue_place: int | None = None  # the farthest back in line it waited for the model (1: next), if it waited
    routing: dict[str, Any] | None = None  # which experts each token used (common.routing.Routing.to_dict()), if kept

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON shape: fields that are set."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    @classmethod
    def problems(cls, data: Any) -> list[str]:
        """What is wrong with stats read from outside (an import): unknown keys, values of the wrong type."""
        if not isinstance(data, dict):
            return [f"stats must be an object; got {type(data).__name__}"]
        known = {f.name for f in fields(cls)}
        found = [f"unknown stats key {key!r}" for key in sorted(set(data) - known)]
        if data.get("routing") is not None:
            found += Routing.problems(data["routing"])
        kept = cls.from_dict(data)
        found += [f"stats {key!r} has a wrong value {data[key]!r}" for key in sorted(set(data) & known - {"routing"})
                  if data[key] is not None and getattr(kept, key) != data[key]]
        return found

    @classmethod
    def from_dict(cls, data: Any) -> AnswerStats:
        """Read stored or imported stats, keeping the fields of the right type and dropping the rest."""
        if not isinstance(data, dict):
            return cls()
        kept: dict[str, Any] = {}
        for f in fields(cls):
            value = data.get(f.name)
            if f.name in ("tokens", "queue_place"):
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            elif f.name in ("ttft_s", "tokens_per_s"):
                ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            elif f.name == "routing":
                ok = value is not None and not Routing.problems(value)
            else:
                ok = isinstance(value, str)
            if ok:
                kept[f.name] = value
        return cls(**kept)
