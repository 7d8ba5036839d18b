"""What the server does when it starts, before any browser opens the page: load the default model, so that a
server nobody has opened answers API calls (the page then finds it loading or ready)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from chat_engine.engine import shared_engine
from common.errors import MoEChatError
from model_loader.devices import probe_devices
from model_loader.registry import load_registry
from web.config import app_settings

log = logging.getLogger("moe_chat.startup")


def preload_default() -> None:
    """Start loading the default model if its row says so (the demo, where there is no GPU)."""
    try:
        settings = app_settings()
        registry = load_registry(settings.models_file)
        devices = probe_devices()
        spec = registry.get(registry.default_id(devices.cuda_count > 0 and settings.device != "cpu",
                                                settings.default_model))
        engine = shared_engine(settings)
        if spec.preload and engine.status().state == "empty":
            log.info("loading %s at start", spec.id)
            engine.start_load(spec)
            while (job := engine.job()) is not None and job.running:
                time.sleep(0.2)
            log.info("start-up load of %s: %s", spec.id, job.message if job is not None else "?")
    except MoEChatError as exc:  # a broken models.toml: the page says so when it opens
        log.warning("no model loaded at start: %s", exc)


def configure_logging() -> None:
    """The app's own log lines (API requests, loads at start) beside Streamlit's, on the server's output."""
    logger = logging.getLogger("moe_chat")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def no_delay_on_listening_sockets() -> int:
    """Turn Nagle's algorithm off on the server's listening sockets (accepted connections inherit it on Linux).

    Streamlit binds its socket itself with protocol 0, and asyncio then skips the TCP_NODELAY it gives every TCP
    connection; each response written in two parts (headers, then body; or one SSE event after another) then
    waits for the client's delayed ACK: 40 ms per API request (measured: 44 ms for /_stcore/health on a kept-alive
    connection, 2 ms with this). Returns how many sockets were changed.
    """
    import psutil

    changed = 0
    for conn in psutil.Process().net_connections(kind="tcp"):
        if conn.raddr or conn.fd < 0 or conn.status not in (psutil.CONN_LISTEN, psutil.CONN_NONE):
            continue
        try:
            sock = socket.socket(fileno=os.dup(conn.fd))
        except OSError:
            continue
        with sock:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                changed += 1
            except OSError:
                pass
    return changed


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    configure_logging()
    try:
        log.info("TCP_NODELAY set on %d listening socket(s)", no_delay_on_listening_sockets())
    except Exception:  # noqa: BLE001 - slower small responses, never a server that does not start
        log.warning("could not set TCP_NODELAY on the listening socket", exc_info=True)
    threading.Thread(target=preload_default, name="moe-chat-preload", daemon=True).start()
    yield
