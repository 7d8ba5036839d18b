"""An ASGI guard: file uploads are refused for browser sessions that have not passed the password gate.

Streamlit accepts a PUT to /_stcore/upload_file/<session id>/<file id> from any connected session and keeps the
file in memory; without this guard a stranger with the link could pin memory before giving any password.
"""

from __future__ import annotations

import json
import logging

from common import sessions

log = logging.getLogger(__name__)
UPLOAD_PREFIX = "/_stcore/upload_file/"


class UploadGuard:
    """Starlette middleware (pure ASGI): 403 for an upload whose session has not passed the gate."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope.get("type") == "http" and scope.get("method") == "PUT" and UPLOAD_PREFIX in path:
            session_id = path.split(UPLOAD_PREFIX, 1)[1].split("/", 1)[0]
            if not sessions.allowed(session_id):
                log.warning("refused an upload from a session that has not passed the password gate")
                body = json.dumps({"error": "Give the page password before uploading files."}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
