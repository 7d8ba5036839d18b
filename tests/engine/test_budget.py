"""The context budget: oldest whole turns give way, the system prompt and the new message stay, counts are exact."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from chat_engine.budget import Budget, ContextOverflowError, context_length, fit_to_context, token_counter
from chat_engine.prompt import Message, encode_prompt, render_prompt

SYSTEM: Message = {"role": "system", "content": "You answer in one short sentence."}
TOPICS = ("routers", "experts", "top-k gating", "load balancing", "shared experts", "capacity factors")
TINY_CONTEXT, ANSWER = 200, 32


def turn(i: int) -> list[Message]:
    topic = TOPICS[i % len(TOPICS)]
    return [{"role": "user", "content": f"Question {i}: what do {topic} do in a mixture of experts?"},
            {"role": "assistant", "content": f"Answer {i}: {topic} decide which experts see each token."}]


def conversation(turns: int, system: bool = True) -> list[Message]:
    history = [m for i in range(turns) for m in turn(i)]
    new = {"role": "user", "content": "And which expert answers this new question?"}
    return ([SYSTEM] if system else []) + history + [new]


@pytest.fixture(scope="module")
def tokenizer(demo_engine):
    return demo_engine.backend.loaded.tokenizer


@pytest.fixture(scope="module")
def count(tokenizer):
    return token_counter(tokenizer)


def sent_tokens(tokenizer, budget: Budget) -> int:
    return len(encode_prompt(tokenizer, budget.messages, "cpu")["input_ids"][0])


@pytest.mark.parametrize("system", [True, False], ids=["explicit-system", "template-default-system"])
def test_oldest_whole_turns_are_dropped_and_the_system_prompt_and_new_message_kept(tokenizer, count, system):
    messages = conversation(6, system=system)
    budget = fit_to_context(messages, count, TINY_CONTEXT, ANSWER)

    assert budget.dropped_turns > 1
    assert budget.notice == f"{budget.dropped_turns} earlier turns not sent (they no longer fit the 200-token context)"
    head = [SYSTEM] if system else []
    kept_history = [m for i in range(budget.dropped_turns, 6) for m in turn(i)]
    assert list(budget.messages) == head + kept_history + [messages[-1]]  # the newest turns, whole, in order
    for before, message in zip(budget.messages, budget.messages[1:], strict=False):  # no reply without its question
        if message["role"] == "assistant":
            assert before["content"].split(":")[0] == message["content"].split(":")[0].replace("Answer", "Question")
    if not system:  # the template's own system prompt is still sent, and it was counted
        assert render_prompt(tokenizer, budget.messages).startswith("<|im_start|>system\nYou are a helpful assistant.")


def test_the_prompt_sent_fits_and_its_count_is_the_tokenizers(tokenizer, count):
    budget = fit_to_context(conversation(6), count, TINY_CONTEXT, ANSWER)

    assert budget.prompt_tokens == sent_tokens(tokenizer, budget)
    assert budget.prompt_tokens + ANSWER <= TINY_CONTEXT
    assert budget.free_tokens == TINY_CONTEXT - ANSWER - budget.prompt_tokens >= 0


def test_dropping_is_minimal_one_more_turn_would_not_fit(count):
    budget = fit_to_context(conversation(6), count, TINY_CONTEXT, ANSWER)

    one_more = [SYSTEM] + turn(budget.dropped_turns - 1) + list(budget.messages[1:])
    assert count(one_more) + ANSWER > TINY_CONTEXT


def test_nothing_is_dropped_when_everything_fits(tokenizer, count):
    messages = conversation(6)
    budget = fit_to_context(messages, count, 2048, ANSWER)

    assert budget.messages == tuple(messages)
    assert budget.dropped_turns == 0 and budget.notice is None
    assert budget.prompt_tokens == sent_tokens(tokenizer, budget)


def test_one_dropped_turn_is_announced_in_the_singular(count):
    messages = conversation(3)
    room = count([SYSTEM] + turn(1) + turn(2) + [messages[-1]]) + ANSWER  # exactly enough for the last two turns

    budget = fit_to_context(messages, count, room, ANSWER)

    assert budget.dropped_turns == 1
    assert budget.notice == f"1 earlier turn not sent (it no longer fits the {room:,}-token context)"


def test_a_reply_less_message_and_an_opening_greeting_are_turns_of_their_own(count):
    greeting = {"role": "assistant", "content": "Hi! Ask me anything about mixtures of experts."}
    unanswered = {"role": "user", "content": "This question's answer failed part way."}
    messages = [SYSTEM, greeting, unanswered] + conversation(2)[1:]
    room = count([SYSTEM] + conversation(2)[1:]) + ANSWER

    budget = fit_to_context(messages, count, room, ANSWER)

    assert budget.dropped_turns == 2 and list(budget.messages) == [SYSTEM] + conversation(2)[1:]


def test_an_oversize_message_is_refused_with_its_size_not_truncated(count):
    long_text = "Tell me everything about routers and experts. " * 300
    messages = conversation(2)[:-1] + [{"role": "user", "content": long_text}]
    needed = count([SYSTEM, messages[-1]])
    assert needed > 2048

    with pytest.raises(ContextOverflowError) as refused:
        fit_to_context(messages, count, 2048, 512)

    text = str(refused.value)
    assert f"{needed:,} tokens" in text and "512 tokens reserved" in text and "2,048-token context" in text
    assert "Shorten it" in text
    assert messages[-1]["content"] == long_text  # the user's message is left whole


def test_a_message_that_fits_only_without_the_answer_reserve_says_how_far_to_lower_it(count):
    messages = [SYSTEM, {"role": "user", "content": "Explain routing in a mixture of experts, please."}]
    needed = count(messages)

    with pytest.raises(ContextOverflowError, match=f"lower max new tokens to at most {TINY_CONTEXT - needed}"):
        fit_to_context(messages, count, TINY_CONTEXT, TINY_CONTEXT)


def test_the_demo_models_context_is_2048(demo_engine):
    loaded = demo_engine.backend.loaded
    assert context_length(loaded.model.config, loaded.tokenizer) == 2048


def test_the_smaller_stated_limit_wins_and_the_no_limit_sentinel_is_ignored():
    config = SimpleNamespace(max_position_embeddings=32768)
    assert context_length(config, SimpleNamespace(model_max_length=8192)) == 8192
    assert context_length(config, SimpleNamespace(model_max_length=int(1e30))) == 32768
    assert context_length(SimpleNamespace(n_positions=1024), SimpleNamespace()) == 1024


def test_a_long_history_is_budgeted_in_well_under_a_second(tokenizer, count):
    messages = conversation(200)
    started = time.perf_counter()
    budget = fit_to_context(messages, count, 2048, 512)
    elapsed = time.perf_counter() - started

    assert elapsed < 1.0, f"budgeting 200 turns took {elapsed:.2f} s"
    assert 0 < budget.dropped_turns < 200
    assert budget.prompt_tokens == sent_tokens(tokenizer, budget) and budget.prompt_tokens + 512 <= 2048
