"""The shared page password, remembered by the browser: a page that was given the right password hands its tab a
one-time ticket, which the tab trades at /signin/pass for an HttpOnly cookie; a refresh then opens the page.

The cookie holds an expiry and an HMAC of it keyed by the password, so changing the password ends every remembered
browser, and nothing is stored on the server."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from web.config import app_settings
from web.signin import over_https

PASS_COOKIE = "moe_chat_pass"
PASS_PATH = "/signin/pass"
TICKET_S = 60.0
_lock = threading.Lock()
_tickets: dict[str, float] = {}  # one-time ticket -> until when it may be traded


def _signature(password: str, expires: int) -> str:
    key = hashlib.sha256(b"moe-chat page password\0" + password.encode()).digest()
    return hmac.new(key, str(expires).encode(), hashlib.sha256).hexdigest()


def pass_cookie(password: str, lifetime_s: float) -> str:
    expires = int(time.time() + lifetime_s)
    return f"{expires}.{_signature(password, expires)}"


def remembered(cookie: str | None, password: str | None) -> bool:
    """Whether a browser's cookie says it was given `password` (and has not expired)."""
    if not cookie or not password or "." not in cookie:
        return False
    expires, _, signature = cookie.partition(".")
    if not expires.isdigit() or len(expires) > 12 or int(expires) < time.time():
        return False
    return hmac.compare_digest(signature, _signature(password, int(expires)))


def ticket() -> str:
    """A one-time ticket for a tab that has just given the right password."""
    token = secrets.token_urlsafe(24)
    now = time.monotonic()
    with _lock:
        for old in [t for t, until in _tickets.items() if until < now]:
            del _tickets[old]
        _tickets[token] = now + TICKET_S
    return token


def _redeem(token: str) -> bool:
    with _lock:
        until = _tickets.pop(token, None)
    return until is not None and until >= time.monotonic()


async def trade_ticket(request: Request) -> Response:
    """POST /signin/pass with a ticket as the body: the cookie (204), or 403 for a ticket that is unknown or used."""
    settings = app_settings()
    body = (await request.body())[:200].decode("ascii", "replace").strip()
    if not settings.password or not _redeem(body):
        return Response(status_code=403)
    response = Response(status_code=204)
    lifetime = settings.sign_in_days * 86400.0
    response.set_cookie(PASS_COOKIE, pass_cookie(settings.password, lifetime), max_age=int(lifetime), path="/",
                        httponly=True, samesite="strict", secure=over_https(request))
    return response


ROUTES = [Route(PASS_PATH, trade_ticket, methods=["POST"])]
