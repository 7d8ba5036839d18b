"""What any websocket session can send, logged in or not, must not hurt the others."""

from __future__ import annotations

import asyncio
import time

import pytest
from streamlit_ws import Session

from tests.server.conftest import run

pytestmark = pytest.mark.slow


async def until(condition, timeout_s: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_clearing_the_caches_neither_unloads_the_model_nor_stops_an_answer(random_server):
    async def scenario():
        user, stranger = await Session.open(random_server), await Session.open(random_server)
        try:
            asking = asyncio.create_task(user.ask("Tell me a story.", timeout_s=150))
            await until(lambda: len(user.page.chat()) >= 2 and user.page.chat()[1][1])  # the answer streams
            for _ in range(3):
                await stranger.clear_caches()
                await asyncio.sleep(0.3)
            reply = await asking
            later = await user.ask("Hello", timeout_s=150)  # and the model is still there for the next one
            return reply, later
        finally:
            await user.close()
            await stranger.close()

    reply, later = run(scenario())
    stats = " ".join(reply.page_texts)
    assert "600 tokens" in stats and "hit max new tokens" in stats, stats  # answered whole, not stopped
    assert "unloaded" not in stats and later.role == "assistant" and later.text


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory):
    from tests.support.server import running_server

    home = tmp_path_factory.mktemp("locked-server")
    pids: list[int] = []
    env = {"MOE_CHAT_PASSWORD": "s3cret", "MOE_CHAT_DB": str(home / "conversations.db"), "MOE_CHAT_DEVICE": "cpu"}
    with running_server(home / "server.log", env, pids) as url:
        deadline = time.monotonic() + 60  # the demo loads at start: memory is measured after that
        while "start-up load of demo-moe" not in (home / "server.log").read_text():
            assert time.monotonic() < deadline, "the start-up load never ended"
            time.sleep(0.2)
        yield url, pids[0]


def test_nothing_can_be_uploaded_before_the_password(locked_server):
    import http.client
    from urllib.parse import urlsplit

    import psutil

    url, pid = locked_server
    host = urlsplit(url)

    def upload(session_id: str, name: str, size: int) -> tuple[int, bytes]:
        """PUT `size` bytes with an XSRF header/cookie pair made up by the stranger; the answer to the headers."""
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        try:
            conn.putrequest("PUT", f"/_stcore/upload_file/{session_id}/{name}")
            for key, value in (("Content-Length", str(size)), ("Content-Type", "application/octet-stream"),
                               ("X-Xsrftoken", "made-up"), ("Cookie", "_streamlit_xsrf=made-up")):
                conn.putheader(key, value)
            conn.endheaders()
            try:
                conn.send(b"x" * size)
            except OSError:
                pass  # refused before the body was read: the rest of it is never taken
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    async def scenario():
        from websockets.asyncio.client import connect

        ws = await connect(url.replace("http", "ws") + "/_stcore/stream", subprotocols=["streamlit"])
        session = Session(ws)
        try:
            await session._rerun([])
            await until(lambda: session.session_id)  # a stranger's tab: connected, no password given
            before = psutil.Process(pid).memory_info().rss
            answers = [upload(session.session_id, f"file{i}", size)
                       for i, size in enumerate((1024, 20 << 20, 20 << 20, 20 << 20, 20 << 20))]
            return answers, psutil.Process(pid).memory_info().rss - before
        finally:
            await session.close()

    answers, grown = run(scenario())
    assert all(status == 403 and b"Give the page password before uploading files" in body
               for status, body in answers), answers
    assert grown < 16 << 20, f"the server grew by {grown / 2**20:.0f} MiB"


def test_a_flood_from_one_address_waits_behind_another_address(random_server):
    from flood import HOSTILE, VICTIM

    async def scenario():
        hostile = [await Session.open(random_server, source=HOSTILE) for _ in range(6)]
        try:
            asks = [asyncio.create_task(s.ask("Tell me a story.", timeout_s=150)) for s in hostile]
            await asyncio.sleep(1.0)  # they are all in line, or refused once the address holds its share
            victim = await Session.open(random_server, source=VICTIM)
            try:
                reply = await victim.ask("Hello", timeout_s=150)
            finally:
                await victim.close()
            await asyncio.gather(*asks, return_exceptions=True)
            return reply
        finally:
            for s in hostile:
                await s.close()

    reply = run(scenario(), timeout_s=300)
    assert reply.role == "assistant" and reply.text
    assert reply.max_place <= 1  # served right after the answer running now, not behind the flood


def test_a_server_killed_mid_answer_keeps_the_answer_written_so_far(tmp_path, random_model_dir):
    import os
    import signal
    import sqlite3

    from tests.server.conftest import RANDOM_MODEL
    from tests.support.helpers import write_models_toml
    from tests.support.server import running_server

    models = write_models_toml(tmp_path / "models.toml", RANDOM_MODEL, "WS random MoE", random_model_dir)
    models.write_text(models.read_text() + "preload = true\n")
    db = tmp_path / "conversations.db"
    env = {"MOE_CHAT_MODELS_FILE": str(models), "MOE_CHAT_DEFAULT_MODEL": RANDOM_MODEL, "MOE_CHAT_DEVICE": "cpu",
           "MOE_CHAT_MAX_NEW_TOKENS": "1800", "MOE_CHAT_DB": str(db), "MOE_CHAT_SAVE_INTERVAL_S": "0.5"}
    pids: list[int] = []
    with running_server(tmp_path / "server.log", env, pids) as url:
        async def scenario() -> None:
            user = await Session.open(url)
            asking = asyncio.create_task(user.ask("Tell me a story.", timeout_s=150))
            await until(lambda: len(user.page.chat()) >= 2 and user.page.chat()[1][1])  # the answer streams
            await asyncio.sleep(2.5)  # a few saves later
            os.kill(pids[0], signal.SIGKILL)  # no goodbye: the process is gone mid-answer
            asking.cancel()
            await asyncio.gather(asking, return_exceptions=True)
            await user.close()

        run(scenario())
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT role, content, partial FROM messages ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["user", "assistant"]
    assert rows[0][1] == "Tell me a story." and rows[1][2] == 1 and rows[1][1].strip()  # the partial answer
