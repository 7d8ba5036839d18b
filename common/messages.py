"""The app's one message shape, end to end: {"role": ..., "content": ...}, as chat templates and the page use it."""

from __future__ import annotations

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
ROLES = ("system", "user", "assistant")
