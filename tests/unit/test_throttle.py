"""Redraws of a streaming answer are bounded in rate, and no text is lost or reordered."""

from __future__ import annotations

import pytest

from components.throttle import coalesce


def test_fast_chunks_are_joined_to_the_interval():
    ticks = iter(i * 0.001 for i in range(10_000))  # a chunk every millisecond
    chunks = [f"t{i} " for i in range(1000)]
    out = list(coalesce(chunks, interval_s=0.05, clock=lambda: next(ticks)))
    assert "".join(out) == "".join(chunks)
    assert out[0] == "t0 "  # the first token is shown at once
    assert len(out) <= 1000 * 0.001 / 0.05 + 2


def test_slow_chunks_pass_through_one_by_one():
    ticks = iter(i * 0.2 for i in range(100))
    chunks = ["a", "b", "c"]
    assert list(coalesce(chunks, interval_s=0.05, clock=lambda: next(ticks))) == chunks


def test_empty_stream():
    assert list(coalesce([], 0.05)) == []


def test_text_held_back_is_handed_over_before_the_source_fails():
    def failing():
        yield from ("a", "b", "c")
        raise RuntimeError("generation failed")

    ticks = iter([0.0, 0.001, 0.002, 0.003])  # "b" and "c" arrive within the interval and are held
    got: list[str] = []
    with pytest.raises(RuntimeError, match="generation failed"):
        for piece in coalesce(failing(), interval_s=0.05, clock=lambda: next(ticks)):
            got.append(piece)
    assert got == ["a", "bc"]
