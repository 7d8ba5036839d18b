"""An ASGI guard in front of Streamlit's own routes that would otherwise serve anyone with the link.

- File uploads are refused for browser sessions that have not passed the password gate: Streamlit accepts a PUT to
  /_stcore/upload_file/<session id>/<file id> from any connected session and keeps the file in memory, so a stranger
  could pin memory before giving any password.
- /_stcore/metrics (Streamlit's Prometheus counters) is refused when the page has a password or sign-in, unless the
  request bears the API key (or an admin's key): it tells a stranger how many sessions are open and how busy the
  server is.
"""

from __future__ import annotations

import json
import logging

from common import sessions
from web.api_request import bearer
from web.config import app_settings
from web.identity import identity

log = logging.getLogger(__name__)
UPLOAD_PREFIX = "/_stcore/upload_file/"
METRICS_PATH = "/_stcore/metrics"


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class UploadGuard:
    """Starlette middleware (pure ASGI): 403 for an upload whose session has not passed the gate, and for the
    metrics of a server with a password, without the API key."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") == "http":
            path = scope.get("path", "")
            if scope.get("method") == "PUT" and UPLOAD_PREFIX in path:
                session_id = path.split(UPLOAD_PREFIX, 1)[1].split("/", 1)[0]
                if not sessions.allowed(session_id):
                    log.warning("refused an upload from a session that has not passed the password gate")
                    await _refuse(send, 403, "Give the page password before uploading files.")
                    return
            elif path.rstrip("/").endswith(METRICS_PATH):
                settings = app_settings()
                authorization = next((v for k, v in scope.get("headers") or [] if k == b"authorization"), b"")
                ident = identity()
                person = ident.from_key(bearer(authorization.decode("latin1")), settings.api_key)
                if (settings.password or ident.signs_in) and (person is None or not person.is_admin):
                    await _refuse(send, 403, "The server's metrics need the API key, or an admin's key where people "
                                             "sign in (Authorization: Bearer <key>), when the page has a password.")
                    return
        await self.app(scope, receive, send)
