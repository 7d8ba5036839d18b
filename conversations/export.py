"""The conversation exchange formats: a versioned JSON document (export and validated import) and Markdown.

JSON shape, version 2 (`FORMAT`, `VERSION`): every branch of the conversation, and the message it was left at::

    {"format": "moe-chat/conversation", "version": 2,
     "title": str, "model_id": str | null, "system_prompt": str, "params": {...},
     "created_at": "2024-05-01T12:00:00+00:00",          # ISO 8601, UTC
     "active": 4,                                         # the id of the message the conversation was left at
     "messages": [{"id": 1, "parent": null,               # parents come before their children
                   "role": "user" | "assistant" | "system", "content": str,
                   "stats": {...} | null, "partial": bool}]}

Version 1 (before branches) had no "id", "parent" or "active": its messages are one branch, in order, and import
as such. On import only "format", "version" and "messages" (each with "role" and "content", and in version 2 "id")
are required; unknown keys are refused so that a file of another kind is not half-read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.messages import ROLES
from conversations.records import AnswerStats, Conversation, StoredMessage
from conversations.tree import tree_problems

FORMAT, VERSION = "moe-chat/conversation", 2
DOCUMENT_KEYS = {1: {"format", "version", "title", "model_id", "system_prompt", "params", "created_at", "messages"}}
DOCUMENT_KEYS[2] = DOCUMENT_KEYS[1] | {"active"}
MESSAGE_KEYS = {1: {"role", "content", "stats", "partial"}}
MESSAGE_KEYS[2] = MESSAGE_KEYS[1] | {"id", "parent"}
MAX_MESSAGES = 10_000  # an import larger than this is refused (the page draws the latest messages anyway)
MAX_TEXT_CHARS = 8_000_000  # all the texts of an import together
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


class FormatError(ValueError):
    """The data is not a conversation document this version can read; the store turns it into a StoreError."""


@dataclass(frozen=True)
class DocumentMessage:
    """One message as read from a document."""

    role: str
    content: str
    stats: dict[str, Any] | None
    partial: bool
    id: Any = None  # the file's own id for it (version 2), and its parent's
    parent: Any = None


@dataclass(frozen=True)
class Document:
    """A validated conversation document, ready to be stored as a new conversation."""

    title: str | None
    model_id: str | None
    system_prompt: str
    params: dict[str, Any]
    created_at: float | None
    messages: tuple[DocumentMessage, ...]  # parents before their children
    active: Any = None  # the id of the message the conversation was left at


def iso_time(timestamp: float) -> str:
    """Seconds since the epoch as an ISO 8601 UTC string."""
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()


def to_document(conversation: Conversation, every: tuple[StoredMessage, ...]) -> dict[str, Any]:
    """The JSON-ready document for a conversation and all its messages (`every`, in id order); the file numbers
    them 1, 2, 3... in that order."""
    number = {m.id: n for n, m in enumerate(every, start=1)}
    return {
        "format": FORMAT, "version": VERSION,
        "title": conversation.title, "model_id": conversation.model_id,
        "system_prompt": conversation.system_prompt, "params": dict(conversation.params),
        "created_at": iso_time(conversation.created_at),
        "active": number.get(conversation.active_leaf),
        "messages": [{"id": number[m.id], "parent": number.get(m.parent_id), "role": m.role, "content": m.content,
                      "stats": m.stats, "partial": m.partial} for m in every],
    }


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise FormatError(message)


def _parse_time(value: Any) -> float | None:
    if value is None:
        return None
    _check(isinstance(value, str), f"created_at must be an ISO 8601 date string; got {value!r}")
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError as exc:
        raise FormatError(f"created_at must be an ISO 8601 date string; got {value!r}") from exc
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _text(value: str, where: str) -> str:
    """A string that can be stored and drawn: no lone surrogates (they are not UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"{where} holds characters that are not valid Unicode (a lone surrogate)") from None
    return value


def _is_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and 0 < len(value) <= 64)


def _parse_message(index: int, data: Any, version: int) -> DocumentMessage:
    where = f"message {index}"
    _check(isinstance(data, Mapping), f"{where} must be an object with role and content; got {type(data).__name__}")
    unknown = set(data) - MESSAGE_KEYS[version]
    _check(not unknown, f"{where} has unknown keys {sorted(unknown)}; known: {sorted(MESSAGE_KEYS[version])}")
    if version == 1:  # one branch: each message follows the one before
        message_id, parent = index, (index - 1 if index else None)
    else:
        message_id, parent = data.get("id"), data.get("parent")
        _check(_is_id(message_id), f"{where}: id must be a number or a short string; got {message_id!r}")
        _check(parent is None or _is_id(parent), f"{where}: parent must be an id or null; got {parent!r}")
    role, content = data.get("role"), data.get("content")
    stats, partial = data.get("stats"), data.get("partial", False)
    _check(role in ROLES, f"{where}: role must be one of {list(ROLES)}; got {role!r}")
    _check(isinstance(content, str), f"{where}: content must be a string; got {type(content).__name__}")
    _check(stats is None or isinstance(stats, Mapping), f"{where}: stats must be an object or null")
    _check(isinstance(partial, bool), f"{where}: partial must be true or false; got {partial!r}")
    if stats is not None:
        problems = AnswerStats.problems(dict(stats))
        _check(not problems, f"{where}: {'; '.join(problems[:3])}")
        for key, value in stats.items():
            if isinstance(value, str):
                _text(value, f"{where}: stats {key!r}")
    return DocumentMessage(role, _text(content, f"{where}: content"), dict(stats) if stats is not None else None,
                           partial, message_id, parent)


def parse_document(data: Any) -> Document:
    """Validate a decoded JSON document; raises FormatError saying what is wrong and where."""
    _check(isinstance(data, Mapping), f"expected a JSON object, got {type(data).__name__}")
    _check(data.get("format") == FORMAT, f"'format' must be {FORMAT!r}; got {data.get('format')!r}")
    version = data.get("version")
    _check(isinstance(version, int) and not isinstance(version, bool), f"'version' must be a number; got {version!r}")
    _check(version <= VERSION, f"it is format version {version}, written by a newer moe-chat (this one reads "
                               f"up to {VERSION}); upgrade moe-chat to import it")
    _check(version in DOCUMENT_KEYS, f"unknown format version {version}; this moe-chat reads versions "
                                     f"{sorted(DOCUMENT_KEYS)}")
    unknown = set(data) - DOCUMENT_KEYS[version]
    _check(not unknown, f"unknown keys {sorted(unknown)}; known: {sorted(DOCUMENT_KEYS[version])}")
    title, model_id = data.get("title"), data.get("model_id")
    system_prompt, params = data.get("system_prompt", ""), data.get("params", {})
    _check(title is None or isinstance(title, str), f"'title' must be a string; got {title!r}")
    _check(model_id is None or isinstance(model_id, str), f"'model_id' must be a string or null; got {model_id!r}")
    _check(isinstance(system_prompt, str), f"'system_prompt' must be a string; got {type(system_prompt).__name__}")
    _check(isinstance(params, Mapping), f"'params' must be an object; got {type(params).__name__}")
    messages = data.get("messages")
    _check(isinstance(messages, list), f"'messages' must be a list; got {type(messages).__name__}")
    _check(len(messages) <= MAX_MESSAGES, f"it has {len(messages):,} messages; at most {MAX_MESSAGES:,} are imported")
    for what, value in (("'title'", title), ("'model_id'", model_id), ("'system_prompt'", system_prompt)):
        if value is not None:
            _text(value, what)
    _check(all(isinstance(v, str | int | float | bool) or v is None for v in params.values()),
           "'params' must hold only plain values (text, numbers, true/false)")
    total = sum(len(m.get("content", "")) for m in messages if isinstance(m, Mapping)
                and isinstance(m.get("content"), str))
    _check(total <= MAX_TEXT_CHARS, f"its messages hold {total:,} characters; at most {MAX_TEXT_CHARS:,} are imported")
    parsed = tuple(_parse_message(i, m, version) for i, m in enumerate(messages))
    active = data.get("active") if version > 1 else (parsed[-1].id if parsed else None)
    problems = tree_problems([m.id for m in parsed], [m.parent for m in parsed], active)
    _check(not problems, "; ".join(problems))
    return Document(title=title, model_id=model_id, system_prompt=system_prompt, params=dict(params),
                    created_at=_parse_time(data.get("created_at")), messages=parsed, active=active)


def _unclosed_fence(text: str) -> str | None:
    """The code fence left open at the end of `text` (a reply stopped mid-block), or None."""
    open_fence: str | None = None
    for line in text.splitlines():
        match = FENCE.match(line)
        if not match:
            continue
        fence, rest = match.groups()
        if open_fence is None:
            if not (fence[0] == "`" and "`" in rest):  # a backtick fence's info string has no backticks
                open_fence = fence
        elif fence[0] == open_fence[0] and len(fence) >= len(open_fence) and not rest.strip():
            open_fence = None
    return open_fence


def to_markdown(conversation: Conversation) -> str:
    """A readable Markdown page: title, model, system prompt, then each message of the branch shown, under its
    role; how many other branches there are is said, not shown."""
    lines = [f"# {conversation.title}", "",
             f"- Model: `{conversation.model_id}`" if conversation.model_id else "- Model: (none chosen)",
             f"- Created: {iso_time(conversation.created_at)}"]
    others = conversation.branches - 1
    if others > 0:
        lines.append(f"- Branches: this is the one the conversation was left at; {others} other branch"
                     f"{'es' if others > 1 else ''} (from edits and regenerated answers) are kept in the JSON export")
    lines.append("")
    if conversation.system_prompt:
        lines += ["## System prompt", "", conversation.system_prompt, ""]
    for message in conversation.messages:
        lines += [f"## {message.role.capitalize()}", "", message.content]
        fence = _unclosed_fence(message.content)
        if fence:  # close it, or every heading after it would render as code
            lines.append(fence)
        if message.partial:
            lines += ["", "*(stopped before the reply was finished)*"]
        lines.append("")
    return "\n".join(lines)

