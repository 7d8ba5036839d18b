"""Stopping, superseding and budgeting a chat: what the page relies on for Stop, reruns and long conversations."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from chat_engine.budget import ContextOverflowError
from chat_engine.engine import Engine
from chat_engine.params import GenerationParams
from tests.support.helpers import KNOWN_ANSWERS

STORY = [{"role": "user", "content": "Tell me a story."}]
LONG = GenerationParams(max_new_tokens=1500, ignore_eos=True)


def generation_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "moe-chat-generate"]


@pytest.mark.parametrize("chunks_before_stop", [1, 3, 8])
def test_stop_after_k_chunks_yields_exactly_the_partial_text(demo_engine, chunks_before_stop):
    stream = demo_engine.chat(STORY, LONG)
    received = [next(stream) for _ in range(chunks_before_stop)]
    stream.cancel()
    received += list(stream)
    assert stream.result.finish_reason == "stopped"
    assert 0 < stream.result.new_tokens < 1500
    # the partial text is the start of what the same greedy generation writes when it is not stopped
    whole = demo_engine.chat(STORY, GenerationParams(max_new_tokens=stream.result.new_tokens, ignore_eos=True)).text()
    assert "".join(received) == whole


def test_a_new_request_of_the_same_owner_cancels_the_running_one(demo_engine):
    first = demo_engine.chat(STORY, LONG, owner="tab-1")
    next(first)
    other = demo_engine.chat(STORY, LONG, owner="tab-2")  # another session: waits for the single slot
    second = demo_engine.chat([{"role": "user", "content": "Hello"}], owner="tab-1")
    assert first.join(timeout=0) and first.new_tokens < 1500  # ended before the new one was queued
    assert not other.stop.is_set()  # the other session's request is left alone
    other.cancel()
    assert second.text() == KNOWN_ANSWERS["Hello"]
    assert other.join(timeout=5)


def test_requests_wait_in_line_for_the_slot_and_can_leave_it(demo_engine):
    running = demo_engine.chat(STORY, LONG, owner="a")
    next(running)
    positions: list[int] = []
    waiting = demo_engine.chat([{"role": "user", "content": "Hello"}], owner="b", on_wait=positions.append)
    leaving = demo_engine.chat([{"role": "user", "content": "What is 2 + 2?"}], owner="c")
    assert (running.queue_position, waiting.queue_position, leaving.queue_position) == (0, 1, 2)
    leaving.cancel()  # leaving the line ends that request without generating anything
    assert leaving.text() == "" and leaving.new_tokens == 0
    answer: list[str] = []
    reader = threading.Thread(target=lambda: answer.append(waiting.text()))
    reader.start()  # a page waiting for its turn is told its place in the line
    deadline = time.monotonic() + 5
    while not positions and time.monotonic() < deadline:
        time.sleep(0.02)
    assert positions and set(positions) == {1}
    running.cancel()
    reader.join(timeout=10)
    assert answer == [KNOWN_ANSWERS["Hello"]]  # each request gets its own answer


def test_no_generation_thread_outlives_its_request_over_50_cycles(demo_engine):
    baseline = threading.active_count()
    for _ in range(50):
        stream = demo_engine.chat(STORY, LONG, owner="tab")
        next(stream)
    stream.cancel()
    assert stream.join(timeout=5)
    assert generation_threads() == []
    assert threading.active_count() == baseline


def test_old_turns_are_left_out_when_the_context_is_full(settings, registry):
    engine = Engine(replace(settings, max_context=120))
    engine.load(registry.get("demo-moe"))
    history = []
    for q in ["Hello", "What is 2 + 2?", "What can you do?", "Hello"]:
        history += [{"role": "user", "content": q}, {"role": "assistant", "content": KNOWN_ANSWERS[q]}]
    stream = engine.chat(history + [{"role": "user", "content": "Who are you?"}], GenerationParams(max_new_tokens=40))
    assert stream.text() == KNOWN_ANSWERS["Who are you?"]
    assert stream.budget.dropped_turns > 0 and "earlier turn" in stream.budget.notice
    assert stream.budget.prompt_tokens + 40 <= 120 == stream.budget.context
    with pytest.raises(ContextOverflowError, match="120-token context"):
        engine.chat([{"role": "user", "content": "word " * 400}], GenerationParams(max_new_tokens=40))
    engine.close()
