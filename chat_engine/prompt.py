"""Turn a message list into model inputs with the tokenizer's chat template."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from model_loader.errors import ChatTemplateError, MoEChatError

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
ROLES = ("system", "user", "assistant")


def check_messages(messages: Sequence[Message]) -> None:
    """Refuse malformed message lists before they reach a template."""
    if not messages:
        raise MoEChatError("There is no message to answer.")
    for m in messages:
        if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise MoEChatError(f"Malformed message {m!r}: need a role in {ROLES} and text content.")


def _require_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            "This model's tokenizer has no chat template and its registry row gives none. "
            "Add chat_template (or chat_format) to the model's row in models.toml, or choose a chat model."
        )


def render_prompt(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The exact prompt text the model will see, ending with the assistant's turn opening."""
    check_messages(messages)
    _require_template(tokenizer)
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: Any, messages: Sequence[Message], device: Any) -> dict[str, Any]:
    """`input_ids` and `attention_mask` tensors, both `[1, prompt_len]`, on the model's input device."""
    check_messages(messages)
    _require_template(tokenizer)
    enc = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                        return_dict=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
