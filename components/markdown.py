"""Markdown as a chat shows it: a lone `$` (prices, shell variables) is text, `$$...$$` is still math, and an
image is a link to click rather than something every reader's browser fetches (an answer from a model server, or
a message of another user, must not make a reader's browser call an address someone chose)."""

from __future__ import annotations

import re

# Fenced blocks and inline code spans are shown verbatim by Markdown, so they are left alone.
_CODE = re.compile(r"(```.*?(?:```|$)|~~~.*?(?:~~~|$)|`[^`\n]*`)", re.DOTALL)
_LONE_DOLLAR = re.compile(r"(?<![\\$])\$(?!\$)")


_IMAGE = re.compile(r"(?<!\\)!\[")


def escape_dollars(text: str) -> str:
    """Escape every `$` that is not part of `$$` and not inside code."""
    parts = _CODE.split(text)
    # split() with one capture group alternates: text, code, text, code, ...
    return "".join(part if i % 2 else _LONE_DOLLAR.sub(r"\\$", part) for i, part in enumerate(parts))


def chat_markdown(text: str) -> str:
    """A chat message as it is drawn: `escape_dollars`, and every image outside code (`![alt](url)`,
    `![alt][ref]`) turned into a link, "[🖼 alt](url)", that loads nothing until it is clicked."""
    parts = _CODE.split(escape_dollars(text))
    return "".join(part if i % 2 else _IMAGE.sub("[🖼 ", part) for i, part in enumerate(parts))


# Bidirectional controls (embeddings, overrides, isolates, marks) reorder what follows them on screen.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# What Streamlit's Markdown gives a meaning to inside a line, directives (`:red[...]`, `:material/x:`) included,
# and what starts a heading, quote or list at the start of one.
_MARKUP = re.compile(r"([\\`*_\[\]:<>~$|&])")
_LEADING = re.compile(r"^(\s*)(?:([#+\->])|(\d+)\.)")


def plain(text: str) -> str:
    """Text shown exactly as typed where Streamlit renders Markdown (titles in buttons and captions)."""
    text = _MARKUP.sub(r"\\\1", _BIDI.sub("", text))
    return _LEADING.sub(lambda m: m[1] + (f"\\{m[2]}" if m[2] else f"{m[3]}\\."), text)
