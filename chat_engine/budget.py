"""The context budget: which turns of a conversation fit the model's window, counted with its own tokenizer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chat_engine.prompt import Message, _require_template, check_messages, template_messages
from common.errors import ContextOverflowError, InvalidParameterError

TokenCounter = Callable[[Sequence[Message]], int]

# Where model configs keep their window, most common first (GPT-2 style, XLNet/T5 style, ChatGLM style).
CONFIG_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
# transformers fills `model_max_length` with int(1e30) when a tokenizer states no limit; nothing real is this long.
SANE_TOKENIZER_LIMIT = 10_000_000
# No token of these models' tokenizers is longer (bar long runs of spaces): text longer than this many characters a
# token cannot be that many tokens. A bound for refusing or cutting what could never fit, never an estimate.
MAX_CHARS_PER_TOKEN = 16
# Used only when neither the config nor the tokenizer states a window: small enough to be safe for any model.
FALLBACK_CONTEXT = 2048



@dataclass(frozen=True)
class Budget:
    """What will be sent this turn, and how much of the window it uses."""

    messages: tuple[Message, ...]
    dropped_turns: int
    prompt_tokens: int  # the rendered prompt exactly as sent, generation prompt included
    context: int
    reserved_for_answer: int
    estimated: bool = False  # counted without the model's tokenizer (a remote model with none): approximate

    @property
    def free_tokens(self) -> int:
        """Tokens of the window left after the prompt and the answer's reserve."""
        return self.context - self.prompt_tokens - self.reserved_for_answer

    @property
    def notice(self) -> str | None:
        """What the page says when earlier turns were left out; None when all were sent."""
        if self.dropped_turns == 0:
            return None
        if self.dropped_turns == 1:
            return f"1 earlier turn not sent (it no longer fits the {self.context:,}-token context)"
        return f"{self.dropped_turns} earlier turns not sent (they no longer fit the {self.context:,}-token context)"


def split_turns(history: Sequence[Message]) -> list[list[Message]]:
    """Group messages into turns: each user message starts one; replies stay with the message they answer."""
    turns: list[list[Message]] = []
    for message in history:
        if message["role"] == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def fit_to_context(messages: Sequence[Message], count_tokens: TokenCounter, context: int,
                   max_new_tokens: int) -> Budget:
    """Drop the fewest whole oldest turns so the prompt plus `max_new_tokens` fits `context`.

    The leading system message and the last message are always kept. Each candidate is counted by rendering
    the whole kept list, because a chat template adds tokens per message (and a default system prompt when
    none is given), so the pieces' counts do not add up to the prompt's. Dropping turns never lengthens the
    prompt, so the fewest turns to drop is found by binary search: O(log turns) renders.
    Raises `ContextOverflowError` when even the system prompt and the last message do not fit.
    """
    check_messages(messages)
    if context < 1 or max_new_tokens < 0:
        raise InvalidParameterError(f"A context of {context} tokens with {max_new_tokens} reserved for the answer "
                                    "is impossible: the context must be positive and the reserve not negative.")
    head = list(messages[:1]) if messages[0]["role"] == "system" and len(messages) > 1 else []
    last = messages[-1]
    turns = split_turns(messages[len(head):-1])

    def kept(dropped: int) -> list[Message]:
        return head + [m for turn in turns[dropped:] for m in turn] + [last]

    def size(dropped: int) -> int:
        return count_tokens(kept(dropped))

    def budget(dropped: int, tokens: int) -> Budget:
        return Budget(tuple(kept(dropped)), dropped, tokens, context, max_new_tokens)

    everything = size(0)
    if everything + max_new_tokens <= context:
        return budget(0, everything)
    minimal = size(len(turns)) if turns else everything
    if minimal + max_new_tokens > context:
        raise ContextOverflowError(minimal, max_new_tokens, context)
    # Invariant: dropping `low` turns does not fit, dropping `high` does.
    low, high, high_tokens = 0, len(turns), minimal
    while high - low > 1:
        middle = (low + high) // 2
        tokens = size(middle)
        if tokens + max_new_tokens <= context:
            high, high_tokens = middle, tokens
        else:
            low = middle
    return budget(high, high_tokens)


def token_counter(tokenizer: Any) -> TokenCounter:
    """Count exactly the ids `encode_prompt` sends: the chat template with the generation prompt, tokenized."""
    _require_template(tokenizer)

    def count(messages: Sequence[Message]) -> int:
        check_messages(messages)
        encoded = tokenizer.apply_chat_template(template_messages(tokenizer, messages), add_generation_prompt=True,
                                                tokenize=True, return_dict=True)
        ids = encoded["input_ids"]
        return len(ids[0]) if ids and isinstance(ids[0], list) else len(ids)

    return count


def context_length(model_config: Any, tokenizer: Any) -> int:
    """The model's context window in tokens: the smaller of the config's and the tokenizer's stated limits.

    The config's position count bounds what the weights can attend to; a tokenizer's `model_max_length`, when
    it is a real number rather than transformers' "no limit" sentinel, is the length the model was trained or
    published for and is sometimes lower. Exceeding either gives garbage or warnings, so the smaller one is the
    real limit. With neither stated, `FALLBACK_CONTEXT` is used.
    """
    config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    stated = [getattr(config, key, None) for key in CONFIG_CONTEXT_KEYS]
    limits = [value for value in stated if isinstance(value, int) and value > 0][:1]  # the first key present
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < SANE_TOKENIZER_LIMIT:
        limits.append(tokenizer_limit)
    return min(limits) if limits else FALLBACK_CONTEXT
