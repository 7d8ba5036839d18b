"""Who is on the other end of a connection, and how long a connection may take to say what it wants.

Two things uvicorn (Streamlit's server) does by default that a server behind an SSH tunnel cannot afford:

- It believes `X-Forwarded-For` from 127.0.0.1, and every tunnel user arrives from 127.0.0.1: anyone could choose
  the address the password throttle and the line see. `PeerAddress` puts the connection's real peer back, and
  believes forwarded headers only from the proxies `MOE_CHAT_TRUSTED_PROXIES` names (none by default).
- It never times out a connection that has not finished sending a request: a client dripping a byte every few
  seconds holds a socket forever. `install_request_deadline` closes such connections after `request_timeout_s`.

Neither has a public hook in uvicorn, so each uses the narrowest one there is: the peer is read from the
connection's transport (reached through the ASGI `receive` callable), and the deadline wraps two methods of the
HTTP protocol classes, before the server accepts its first connection.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("moe_chat.connections")
FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip", b"forwarded")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ANY = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def _inside(host: str, networks: Iterable[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def transport_peer(receive: Any) -> tuple[str, int] | None:
    """The address the connection really comes from, read from its transport (uvicorn's protocols keep it there)."""
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    try:
        peer = transport.get_extra_info("peername") if transport is not None else None
    except Exception:  # noqa: BLE001 - a transport without the information: the caller says what it does then
        return None
    return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None


def forwarded_client(headers: list[tuple[bytes, bytes]], trusted: tuple[Network, ...]) -> str | None:
    """The client a chain of trusted proxies reports: the right-most X-Forwarded-For entry not itself a proxy."""
    values = [v.decode("latin1") for k, v in headers if k == b"x-forwarded-for"]
    hops = [hop.strip() for hop in ",".join(values).split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _inside(hop, trusted):
            return hop if _inside(hop, ANY) else None  # the first hop no proxy vouches for; not an address: none
    return None


class PeerAddress:
    """Pure ASGI middleware, outermost: `scope["client"]` is the real peer, or the client a trusted proxy names.

    Forwarded headers are removed from requests they are not believed for, so nothing further in can read them.
    """

    def __init__(self, app: Any, trusted: tuple[Network, ...] = ()) -> None:
        self.app, self.trusted = app, trusted
        self._warned = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            self._correct(scope, receive)
        await self.app(scope, receive, send)

    def _correct(self, scope: dict[str, Any], receive: Any) -> None:
        peer = transport_peer(receive)
        headers = scope.get("headers") or []
        if peer is None:  # not uvicorn: keep its address, but believe no forwarded header
            if not self._warned and any(k in FORWARDED for k, _ in headers):
                self._warned = True
                log.warning("forwarded headers arrived and the connection's own address is unknown: they are ignored")
        else:
            scope["client"] = peer
        if peer is not None and self.trusted and _inside(peer[0], self.trusted):
            client = forwarded_client(headers, self.trusted)
            if client is not None:
                scope["client"] = (client, 0)
            return
        if any(k in FORWARDED for k, _ in headers):
            scope["headers"] = [(k, v) for k, v in headers if k not in FORWARDED]


def _arm(protocol: Any, seconds: float) -> None:
    """From now, the connection has `seconds` to start its next request (its headers all received)."""
    timer = getattr(protocol, "_moe_chat_deadline", None)
    if timer is not None:
        timer.cancel()
    protocol._moe_chat_deadline = protocol.loop.call_later(seconds, _expire, protocol, protocol.cycle)


def _expire(protocol: Any, armed_cycle: Any) -> None:
    transport = protocol.transport
    if transport is None or transport.is_closing() or transport.get_protocol() is not protocol:
        return  # closed already, or now a websocket (which has its own pings)
    cycle = protocol.cycle
    if cycle is armed_cycle and (cycle is None or cycle.response_complete):  # no request began since
        log.info("closed a connection that sent no whole request in time")
        transport.close()


def install_request_deadline(seconds: float) -> list[type]:
    """Close HTTP connections that have not sent a whole request within `seconds` of connecting or of their last
    response (uvicorn's own keep-alive timer is reset by every byte, so a drip never meets it). Returns the
    protocol classes changed; calling it again changes only the time."""
    classes: list[type] = []
    try:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        classes.append(H11Protocol)
    except ImportError:  # pragma: no cover - uvicorn always has h11
        pass
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        classes.append(HttpToolsProtocol)
    except ImportError:  # httptools is optional
        pass
    for cls in classes:
        if getattr(cls, "_moe_chat_seconds", None) is None:
            _wrap(cls)
        cls._moe_chat_seconds = seconds
    return classes


def _wrap(cls: type) -> None:
    made, complete = cls.connection_made, cls.on_response_complete

    def connection_made(self: Any, transport: Any) -> None:
        made(self, transport)
        _arm(self, type(self)._moe_chat_seconds)

    def on_response_complete(self: Any) -> None:
        complete(self)
        if not self.transport.is_closing():
            _arm(self, type(self)._moe_chat_seconds)

    cls.connection_made = connection_made
    cls.on_response_complete = on_response_complete
