"""Markdown as a chat shows it: a lone `$` (prices, shell variables) is text, `$$...$$` is still math."""

from __future__ import annotations

import re

# Fenced blocks and inline code spans are shown verbatim by Markdown, so they are left alone.
_CODE = re.compile(r"(```.*?(?:```|$)|~~~.*?(?:~~~|$)|`[^`\n]*`)", re.DOTALL)
_LONE_DOLLAR = re.compile(r"(?<![\\$])\$(?!\$)")


def escape_dollars(text: str) -> str:
    """Escape every `$` that is not part of `$$` and not inside code."""
    parts = _CODE.split(text)
    # split() with one capture group alternates: text, code, text, code, ...
    return "".join(part if i % 2 else _LONE_DOLLAR.sub(r"\\$", part) for i, part in enumerate(parts))
