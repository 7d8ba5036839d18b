"""What the API takes from a chat-completions request, and how it refuses the rest: each refusal names its field."""

from __future__ import annotations

import pytest

from chat_engine.params import GenerationParams
from web.api_request import ApiError, RequestLimits, parse
from web.stop_text import StopText

DEFAULTS = GenerationParams(max_new_tokens=256, do_sample=True, temperature=0.7, top_p=0.8, top_k=20)
ASK = [{"role": "user", "content": "Hi"}]
LIMITS = RequestLimits(context=64, max_message_chars=100)  # at most 1,024 characters in 32 messages


def request(**fields):
    return parse({"model": "m", "messages": ASK, **fields}, DEFAULTS, LIMITS)


def test_omitted_fields_keep_the_models_defaults_and_given_ones_replace_them():
    assert request().params == DEFAULTS and not request().stream and request().stop == ()
    greedy = request(temperature=0, max_tokens=5, seed=-1, top_k=-1, repetition_penalty=1.2, stop="\n")
    assert (greedy.params.do_sample, greedy.params.max_new_tokens, greedy.params.top_k) == (False, 5, 0)
    assert greedy.params.seed == 2**32 - 1 and greedy.params.repetition_penalty == 1.2 and greedy.stop == ("\n",)
    sampled = request(temperature=1.3, top_p=0.5, max_completion_tokens=9, stream=True,
                      stream_options={"include_usage": True}, ignore_eos=True)
    assert (sampled.params.temperature, sampled.params.top_p, sampled.params.max_new_tokens) == (1.3, 0.5, 9)
    assert sampled.stream and sampled.include_usage and sampled.params.ignore_eos


def test_message_shapes_are_normalised():
    parsed = parse({"model": "m", "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
    ]}, DEFAULTS, LIMITS)
    assert parsed.messages == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"})


@pytest.mark.parametrize(("fields", "param", "status"), [
    ({"n": 2}, "n", 400),
    ({"logprobs": True}, "logprobs", 400),
    ({"tools": []}, "tools", 400),
    ({"temperature": 3}, "temperature", 400),
    ({"temperature": "hot"}, "temperature", 400),
    ({"top_p": 0}, "top_p", 400),
    ({"max_tokens": 0}, "max_tokens", 400),
    ({"max_tokens": 5, "max_completion_tokens": 5}, "max_completion_tokens", 400),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", 400),
    ({"stop": [""]}, "stop", 400),
    ({"stream_options": {"include_usage": True}}, "stream_options", 400),
    ({"messages": []}, "messages", 400),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", 400),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0].type", 400),
    ({"messages": [{"role": "user", "content": "x" * 101}]}, "messages[0].content", 413),
    ({"messages": [{"role": "user", "content": "hi", "name": "bob"}]}, "messages[0].name", 400),
    ({"messages": [{"role": "user", "content": "x" * 100}] * 11}, "messages", 400),
    ({"messages": ASK * 33}, "messages", 400),
    ({"model": ""}, "model", 400),
])
def test_what_cannot_be_honoured_is_refused_naming_the_field(fields, param, status):
    with pytest.raises(ApiError) as caught:
        request(**fields)
    assert caught.value.param == param and caught.value.status == status
    assert set(caught.value.body()["error"]) == {"message", "type", "param", "code"}


def test_stop_strings_split_across_pieces_are_found_and_left_out():
    stops = StopText(["<END>", "\n\n"])
    sent = []
    for piece in ["Hello <", "EN", "D> and more"]:
        text, hit = stops.feed(piece)
        sent.append(text)
        if hit:
            break
    assert "".join(sent) == "Hello " and hit
    plain = StopText(["zz"])
    assert plain.feed("abcz")[0] + plain.feed("y")[0] + plain.flush() == "abczy"


def test_a_request_that_could_never_fit_the_context_is_refused_before_its_text_is_cleaned(monkeypatch):
    import web.api_request as api_request

    cleaned = []
    monkeypatch.setattr(api_request, "clean_text", lambda text: cleaned.append(text) or text)
    with pytest.raises(ApiError) as caught:
        request(messages=[{"role": "user", "content": "y" * 100}] * 10 + [{"role": "user", "content": "z" * 100}])
    assert caught.value.code == "context_length_exceeded" and "1,024 characters" in str(caught.value)
    assert cleaned == []  # nothing was worked on: the sizes alone refused it
    assert LIMITS.body_bytes == (64 << 10) + 1024 * 6  # and its body is bounded by the same context
    assert RequestLimits(context=10**7, max_message_chars=100).body_bytes == 16 << 20
