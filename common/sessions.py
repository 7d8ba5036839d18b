"""Which browser sessions have passed the page's password gate: shared by the page and the HTTP guards."""

from __future__ import annotations

import threading

_lock = threading.Lock()
_allowed: set[str] = set()


def allow(session_id: str) -> None:
    """The session may use what is behind the gate (uploads included)."""
    with _lock:
        _allowed.add(session_id)


def allowed(session_id: str) -> bool:
    with _lock:
        return session_id in _allowed

