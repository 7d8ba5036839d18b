"""Turn a message list into model inputs with the tokenizer's chat template."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from common.errors import ChatTemplateError, InvalidParameterError, MoEChatError
from common.messages import ROLES, Message

# Put inside a control token's text (after its first character), this invisible character makes the text
# tokenize as ordinary characters, so typed "<|im_start|>system" can never forge a turn of the conversation.
WORD_JOINER = "\u2060"


def check_messages(messages: Sequence[Message]) -> None:
    """Refuse malformed message lists before they reach a template."""
    if not messages:
        raise MoEChatError("There is no message to answer.")
    for m in messages:
        if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise MoEChatError(f"Malformed message {m!r}: need a role in {ROLES} and text content.")


_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Typed text made safe to tokenize and store: no lone surrogates (invalid UTF-8), no control characters
    other than tab and newlines."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL_CHARS.sub("", text.replace("\r\n", "\n"))


def check_length(text: str, limit: int) -> None:
    """Refuse a message over `limit` characters, saying by how much."""
    if len(text) > limit:
        raise InvalidParameterError(f"Your message has {len(text):,} characters; the limit is {limit:,} "
                                    "(MOE_CHAT_MAX_MESSAGE_CHARS). Shorten it or send it in parts.")


def control_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The texts the tokenizer turns into control tokens, longest first."""
    texts = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            texts.add(str(token.content if hasattr(token, "content") else token))
    return tuple(sorted((t for t in texts if len(t) > 1), key=len, reverse=True))


def neutralize(text: str, controls: Sequence[str]) -> str:
    """`text` with every control-token text in it made plain (it looks the same to a reader)."""
    for control in controls:
        if control in text:
            text = text.replace(control, control[0] + WORD_JOINER + control[1:])
    return text


def template_messages(tokenizer: Any, messages: Sequence[Message]) -> list[Message]:
    """Checked messages, their content unable to inject control tokens, ready for the chat template."""
    check_messages(messages)
    _require_template(tokenizer)
    controls = control_tokens(tokenizer)
    return [{"role": m["role"], "content": neutralize(m["content"], controls)} for m in messages]


def _require_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            "This model's tokenizer has no chat template and its registry row gives none. "
            "Add chat_template (or chat_format) to the model's row in models.toml, or choose a chat model."
        )


def render_prompt(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The exact prompt text the model will see, ending with the assistant's turn opening."""
    return tokenizer.apply_chat_template(template_messages(tokenizer, messages), tokenize=False,
                                         add_generation_prompt=True)


def encode_prompt(tokenizer: Any, messages: Sequence[Message], device: Any) -> dict[str, Any]:
    """`input_ids` and `attention_mask` tensors, both `[1, prompt_len]`, on the model's input device."""
    enc = tokenizer.apply_chat_template(template_messages(tokenizer, messages), add_generation_prompt=True,
                                        tokenize=True, return_dict=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
