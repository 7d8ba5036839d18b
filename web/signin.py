"""Sign-in for built-in accounts: a plain form route that sets an HttpOnly session cookie, sign-out, and the guard
that serves nothing but that form (no page, websocket or upload; Streamlit's public frontend files aside) to a
request not signed in.

Streamlit's script cannot set a cookie (it runs over the websocket), so signing in happens here, before the page;
the page reads the cookie through `st.context.cookies` and asks the accounts database whose it is on every run."""

from __future__ import annotations

import asyncio
import html
import ipaddress
import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlparse

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request, cookie_parser
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from accounts.people import ACCOUNTS, PROXY
from accounts.store import account_name
from common.errors import MoEChatError, StoreError
from web.identity import ACCOUNT_THROTTLE, SESSION_COOKIE, SIGN_IN_THROTTLE, identity

log = logging.getLogger("moe_chat.signin")
SIGN_IN_PATH, SIGN_OUT_PATH = "/signin", "/signout"
OPEN_PATHS = (SIGN_IN_PATH, SIGN_OUT_PATH, "/_stcore/health", "/favicon.png")
# Streamlit's frontend files: the same public bundle for everyone (a page signing out still loads the pieces it
# draws the sign-in redirect with); no conversation, model or setting is in them.
OPEN_PREFIXES = ("/static/", "/v1/")  # the API checks its own keys
MAX_FORM_BYTES = 8192
MAX_PACE_WAIT_S = 120.0
REFUSED_WEBSOCKET = 4401  # closed before it is accepted: the browser sees 403

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport"
content="width=device-width, initial-scale=1"><title>{title} · MoE Chat</title><style>
body{{font-family:system-ui,sans-serif;background:#f6f7f9;margin:0;display:grid;place-items:center;min-height:100vh}}
main{{background:#fff;padding:2rem 2.5rem;border-radius:12px;box-shadow:0 2px 12px #0002;min-width:18rem}}
label{{display:block;margin:.8rem 0 .3rem}}input{{width:100%;padding:.5rem;box-sizing:border-box;font-size:1rem}}
button{{margin-top:1.2rem;padding:.55rem 1.2rem;font-size:1rem;cursor:pointer}}.error{{color:#b00020}}</style>
</head><body><main><h1>💬 MoE Chat</h1>{body}</main></body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status,
                        headers={"cache-control": "no-store", "x-frame-options": "DENY"})


def sign_in_form(message: str = "", name: str = "", status: int = 200) -> HTMLResponse:
    error = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return _page("Sign in", f"""{error}<form method="post" action="signin">
<label for="name">Name</label><input id="name" name="name" autocomplete="username" required autofocus
value="{html.escape(name, quote=True)}"><label for="password">Password</label><input id="password" name="password"
type="password" autocomplete="current-password" required><button type="submit">Sign in</button></form>""", status)


def _tunnel_or_none(host: str | None) -> str | None:
    """The client's address, or None where it tells nothing (a loopback address: every SSH-tunnel user's)."""
    try:
        return None if host is None or ipaddress.ip_address(host).is_loopback else host
    except ValueError:
        return None


def over_https(request: Request) -> bool:
    """Whether the browser reached the app over https: directly, or through a trusted proxy that says so (forwarded
    headers from anywhere else were already dropped by web.connections.PeerAddress)."""
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


def _cross_site(request: Request) -> bool:
    """A form posted from another site's page (login or logout forgery): its Origin names another host."""
    origin = request.headers.get("origin")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return True
    # "null": a sandboxed frame's form, which can still navigate the whole tab (and so carry a Lax cookie)
    return bool(origin) and (origin == "null" or urlparse(origin).netloc != request.headers.get("host", ""))


async def _form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ValueError("too large")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), max_num_fields=8).items()}


async def sign_in_page(request: Request) -> Response:
    ident = identity()
    if ident.mode != ACCOUNTS:
        return _page("Sign in", "<p>This server has no built-in accounts: open the page itself.</p>", 404)
    if ident.from_cookie(request.cookies):
        return RedirectResponse("./", status_code=303)
    form = sign_in_form()
    if SESSION_COOKIE in request.cookies:  # one that has ended: forgotten by the browser too
        form.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return form


async def sign_in(request: Request) -> Response:
    ident = identity()
    if ident.mode != ACCOUNTS or ident.accounts is None:
        return _page("Sign in", "<p>This server has no built-in accounts.</p>", 404)
    if _cross_site(request):
        return sign_in_form("Sign in from this app's own page.", status=403)
    try:
        form = await _form(request)
    except ValueError:
        return sign_in_form("That form was too large.", status=413)
    given_name, password = form.get("name", ""), form.get("password", "")
    try:
        key_name = account_name(given_name)
    except StoreError:
        key_name = given_name.strip().lower()[:128]
    address = _tunnel_or_none(request.client.host if request.client else None)
    # Wrong tries slow down this name from this address, and this address, the usual way (2 s, 4 s, ... 5 min); and
    # the name from anywhere (a tunnel's users have no address of their own), but only up to ACCOUNT_MAX_WAIT_S, so
    # a stranger guessing at it delays its owner by half a minute at most rather than locking them out.
    keys = [("account", f"{key_name} from {address}"), ("address", address)] if address else []
    wait = max(SIGN_IN_THROTTLE.begin(keys), ACCOUNT_THROTTLE.begin([("account", key_name)]))
    if wait > 0:
        return sign_in_form(f"Too many wrong passwords for this name or address: try again in {wait:.0f} s.",
                            given_name, 429)
    turn = SIGN_IN_THROTTLE.pace(MAX_PACE_WAIT_S)
    if turn > MAX_PACE_WAIT_S:
        return sign_in_form(f"Many sign-ins are being tried right now: try again in {turn:.0f} s.", given_name, 429)
    await asyncio.sleep(turn)
    account, reason = await run_in_threadpool(ident.accounts.check_password, given_name, password)
    if account is None:
        SIGN_IN_THROTTLE.failed(keys, "sign-in password")
        ACCOUNT_THROTTLE.failed([("account", key_name)], "sign-in password, from anywhere")
        log.warning("sign-in refused for %r from %s: %s", key_name[:64], address or "a tunnel or this machine", reason)
        return sign_in_form("Wrong name or password.", given_name, 401)
    SIGN_IN_THROTTLE.succeeded(keys)
    ACCOUNT_THROTTLE.succeeded([("account", key_name)])
    token = await run_in_threadpool(ident.accounts.start_sign_in, account.name, ident.sign_in_s)
    log.info("%s signed in from %s", account.name, address or "a tunnel or this machine")
    response = RedirectResponse("./", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=int(ident.sign_in_s), path="/", httponly=True,
                        samesite="lax", secure=over_https(request))
    return response


async def sign_out_page(request: Request) -> Response:
    return _page("Sign out", '<form method="post" action="signout"><p>Sign out of MoE Chat on this browser?</p>'
                             '<button type="submit">Sign out</button></form>')


async def sign_out(request: Request) -> Response:
    ident = identity()
    if _cross_site(request):
        return _page("Sign out", "<p>Sign out from this app's own page.</p>", 403)
    if ident.accounts is not None:
        ended = await run_in_threadpool(ident.accounts.sign_out, request.cookies.get(SESSION_COOKIE))
        log.info("a sign-in ended (%s)", "signed out" if ended else "it had already ended")
    response = RedirectResponse(SIGN_IN_PATH.lstrip("/"), status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


ROUTES = [Route(SIGN_IN_PATH, sign_in_page, methods=["GET"]), Route(SIGN_IN_PATH, sign_in, methods=["POST"]),
          Route(SIGN_OUT_PATH, sign_out_page, methods=["GET"]), Route(SIGN_OUT_PATH, sign_out, methods=["POST"])]


async def _refuse_http(scope: dict[str, Any], send: Any, mode: str) -> None:
    wants_page = scope.get("method") in ("GET", "HEAD") and not scope.get("path", "").startswith("/_stcore/")
    if mode == ACCOUNTS and wants_page:
        response: Response = RedirectResponse(SIGN_IN_PATH, status_code=303)
    else:
        message = ("Sign in first (open the page in a browser)." if mode == ACCOUNTS
                   else "Sign in through the proxy in front of this app.")
        response = Response(json.dumps({"error": message}), status_code=401, media_type="application/json")
    await response(scope, None, send)


class SignInGuard:
    """Pure ASGI middleware. Proxy mode: the person's header is believed only beside the proxy's secret (both are
    taken off any request otherwise, and the secret always). Proxy and accounts modes: a request that names no
    signed-in person gets only the sign-in form and the health check; the API checks its own keys."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            ident = identity()
        except MoEChatError as exc:  # e.g. a proxy header without its secret: say so on every request
            log.error("no identity source: %s", exc)
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": REFUSED_WEBSOCKET})
            else:
                await Response(str(exc), status_code=500)(scope, receive, send)
            return
        if ident.mode == PROXY:
            scope = dict(scope, headers=ident.proxy_headers_believed(list(scope.get("headers") or [])))
        path = scope.get("path", "")
        if ident.mode not in (PROXY, ACCOUNTS) or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope.get("headers") or []}
        person = (ident.from_proxy(headers) if ident.mode == PROXY
                  else await run_in_threadpool(ident.from_cookie, cookie_parser(headers.get("cookie", ""))))
        if person is not None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # the connect message
            await send({"type": "websocket.close", "code": REFUSED_WEBSOCKET})
            log.info("refused a websocket that is not signed in")
            return
        await _refuse_http(scope, send, ident.mode)
