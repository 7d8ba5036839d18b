"""Which address a request is from: the connection's own, unless a proxy the settings trust forwards it."""

from __future__ import annotations

import asyncio
import ipaddress
import threading

from web.connections import PeerAddress


class Transport:
    def __init__(self, peer):
        self.peer = peer

    def get_extra_info(self, name):
        return self.peer if name == "peername" else None


class Cycle:  # what uvicorn's `receive` is bound to: its request cycle, holding the connection's transport
    def __init__(self, peer):
        self.transport = Transport(peer)

    async def receive(self):
        return {"type": "http.request"}


def seen(peer, headers, trusted=()):
    got = {}

    async def app(scope, receive, send):
        got.update(scope)

    scope = {"type": "http", "client": ("10.9.9.9", 0), "headers": headers}  # as uvicorn rewrote it from the header
    middleware = PeerAddress(app, tuple(ipaddress.ip_network(t) for t in trusted))
    # on a thread of its own: a browser test in this worker may hold an event loop in this one
    worker = threading.Thread(target=asyncio.run, args=(middleware(scope, Cycle(peer).receive, None),))
    worker.start()
    worker.join(10)
    return got["client"], [k for k, _ in got["headers"]]


def test_forwarded_headers_from_anyone_are_dropped_and_the_real_peer_restored():
    client, headers = seen(("127.0.0.1", 50123), [(b"x-forwarded-for", b"10.9.9.9"), (b"host", b"x")])
    assert client == ("127.0.0.1", 50123) and headers == [b"host"]


def test_a_trusted_proxy_names_the_client_and_chains_skip_trusted_hops():
    chain = [(b"x-forwarded-for", b"198.51.100.4, 10.0.0.3")]
    assert seen(("10.0.0.2", 40000), chain, trusted=["10.0.0.0/24"])[0] == ("198.51.100.4", 0)
    assert seen(("10.1.0.2", 40000), chain, trusted=["10.0.0.0/24"])[0] == ("10.1.0.2", 40000)  # not a proxy
    assert seen(("10.0.0.2", 40000), [(b"x-forwarded-for", b"not-an-ip")], trusted=["10.0.0.2"])[0] == \
        ("10.0.0.2", 40000)
