"""Accounts for the server tiers: made with the real `python -m accounts` command, signed in through the real form."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

from tests.support.helpers import ROOT


def add_account(env: dict[str, str], name: str, password: str, admin: bool = False) -> str:
    """`python -m accounts add` with the server's environment; returns what it printed."""
    done = subprocess.run([sys.executable, "-m", "accounts", "add", name, "--password-stdin",
                           *(["--admin"] if admin else [])], input=password + "\n", capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, **env), timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


class _Keep(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a 303 is the answer itself: its cookie and its Location
        return None


def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
         method: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request, redirects not followed."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        response = urllib.request.build_opener(_Keep).open(request, timeout=60)
    except urllib.error.HTTPError as exc:
        response = exc
    with response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


def sign_in(url: str, name: str, password: str) -> str:
    """Post the sign-in form; the Cookie header the browser would send afterwards."""
    status, headers, body = http(f"{url}/signin", urllib.parse.urlencode({"name": name, "password": password}).encode())
    assert status == 303, (status, body[-300:])
    return headers["set-cookie"].split(";")[0]
