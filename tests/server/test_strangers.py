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
