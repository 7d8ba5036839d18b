"""What any websocket session can send, logged in or not, must not hurt the others."""

from __future__ import annotations

import asyncio

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
        yield url, pids[0]


def test_nothing_can_be_uploaded_before_the_password(locked_server):
    import urllib.error
    import urllib.request

    import psutil

    url, pid = locked_server

    async def stranger_session_id() -> tuple[Session, str]:
        from websockets.asyncio.client import connect

        ws = await connect(url.replace("http", "ws") + "/_stcore/stream", subprotocols=["streamlit"])
        session = Session(ws)
        await session._rerun([])
        await until(lambda: session.session_id)
        return session, session.session_id

    async def scenario() -> list[int]:
        session, session_id = await stranger_session_id()
        statuses = []
        try:
            before = psutil.Process(pid).memory_info().rss
            for i, size in enumerate((1024, 20 << 20, 20 << 20, 20 << 20, 20 << 20)):  # 4 x 20 MiB after a small one
                request = urllib.request.Request(  # with an XSRF header/cookie pair the stranger made up
                    f"{url}/_stcore/upload_file/{session_id}/file{i}", data=b"x" * size, method="PUT",
                    headers={"X-Xsrftoken": "made-up", "Cookie": "_streamlit_xsrf=made-up",
                             "Content-Type": "application/octet-stream"})
                try:
                    urllib.request.urlopen(request, timeout=30)
                    statuses.append(200)
                except urllib.error.HTTPError as refused:
                    statuses.append(refused.code)
                    assert b"Give the page password before uploading files" in refused.read()
                except urllib.error.URLError:  # refused before the body was read: the rest of it is never taken
                    statuses.append(403)
            grown = psutil.Process(pid).memory_info().rss - before
            return statuses, grown
        finally:
            await session.close()

    statuses, grown = run(scenario())
    assert statuses == [403] * 5
    assert grown < 16 << 20, f"the server grew by {grown / 2**20:.0f} MiB"


def test_a_flood_from_one_address_waits_behind_another_address(random_server):
    from flood import VICTIM

    async def scenario():
        hostile = [await Session.open(random_server) for _ in range(6)]  # from 127.0.0.1
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
