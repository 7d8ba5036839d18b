"""A model server that does not play by the rules (tests/support/fake_openai.py's hostile modes): whatever it
sends, the app reads a bounded amount, ends the answer itself, and keeps what arrived."""

from __future__ import annotations

import time

import pytest

from chat_engine.engine import Engine
from chat_engine.params import GenerationParams
from common.errors import GenerationError, GenerationTimeout
from common.settings import Settings
from model_loader.registry import ModelSpec
from tests.support.fake_openai import MODEL, running_fake

ASK = [{"role": "user", "content": "Who are you?"}]


@pytest.fixture
def fake():
    with running_fake() as server:
        yield server


@pytest.fixture
def engine(tmp_path, fake):
    engine = Engine(Settings(cache_dir=tmp_path, models_file=tmp_path / "models.toml", connect_timeout_s=1.0,
                             stall_timeout_s=2.0, device="cpu"))
    engine.load(ModelSpec(id="remote", name="Remote", source="openai", backend="openai", base_url=fake.base_url,
                          model=MODEL))
    yield engine
    engine.close()


def test_a_server_that_ignores_max_tokens_is_cut_at_the_apps_limit_with_a_note(engine, fake):
    fake.mode = "endless"
    started = time.perf_counter()
    reply = engine.chat(ASK, GenerationParams(max_new_tokens=50, do_sample=False))
    text = reply.text()
    assert time.perf_counter() - started < 5
    assert text.count(" word") == 52  # the 50 tokens asked for, and the two pieces a server may add
    assert reply.result.finish_reason == "length" and reply.result.new_tokens == 50
    assert "cut off by this app at 50 tokens" in reply.note
    assert fake.sent < 1 << 20  # and the server's flood was not read on


def test_a_single_huge_event_is_refused_long_before_its_end(engine, fake):
    fake.mode = "huge_event"
    reply = engine.chat(ASK, GenerationParams(max_new_tokens=50, do_sample=False))
    with pytest.raises(GenerationError, match="a single event of over 1 MiB"):
        reply.text()
    assert fake.sent < 32 << 20  # refused after the first MiB (and what the sockets held), not after all 50


def test_a_server_dripping_bytes_but_no_text_ends_at_the_stall_limit(engine, fake):
    fake.mode = "drip"
    started = time.perf_counter()
    reply = engine.chat(ASK, GenerationParams(max_new_tokens=50, do_sample=False))
    with pytest.raises(GenerationTimeout, match="sent nothing for 2 s"):
        reply.text()
    assert time.perf_counter() - started < 4.5
    deadline = time.monotonic() + 5
    while fake.active and time.monotonic() < deadline:  # and its connection is closed: the server sees it go
        time.sleep(0.05)
    assert fake.active == 0 and fake.cancelled == 1
