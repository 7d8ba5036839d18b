"""Which headers a trusted proxy's request keeps, and a proxy configured by halves."""

from __future__ import annotations

import pytest

from accounts.people import PROXY
from common.errors import MoEChatError
from common.settings import Settings
from web.identity import Identity


def test_the_persons_header_is_believed_only_beside_the_secret_which_never_reaches_the_app():
    ident = Identity(PROXY, None, "x-forwarded-user", "s3cret")
    forged = [(b"host", b"a"), (b"x-forwarded-user", b"admin")]
    assert ident.proxy_headers_believed(forged) == [(b"host", b"a")]
    wrong = forged + [(b"x-moe-chat-proxy-secret", b"guess")]
    assert ident.proxy_headers_believed(wrong) == [(b"host", b"a")]
    right = forged + [(b"X-MoE-Chat-Proxy-Secret", b"s3cret")]
    assert ident.proxy_headers_believed(right) == forged


def test_a_proxy_header_without_its_secret_is_an_error_that_says_what_to_set():
    with pytest.raises(MoEChatError, match="PROXY_USER_HEADER and MOE_CHAT_PROXY_SECRET .* go together"):
        Settings.from_env({"MOE_CHAT_PROXY_USER_HEADER": "X-Forwarded-User"}).proxy_configured()
    assert Settings.from_env({}).proxy_configured() is False
