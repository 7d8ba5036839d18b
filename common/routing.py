"""Routing of one answer in a compact, storable form: for each token and MoE layer, the top-k experts and weights.

Experts are stored as unsigned bytes (two bytes per expert id for models with more than 256 experts) and weights
quantized to 1/255, both base64 in JSON: a 1,000-token Qwen1.5-MoE answer (24 layers x 4 experts) is about 290 KB
of JSON with its prompt. At most `MAX_TOKENS` tokens are kept (the prompt's last ones give way first).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_TOKENS = 4096
_KEYS = {"layers", "top_k", "num_experts", "prompt_tokens", "tokens", "experts", "weights", "shared"}


@dataclass(frozen=True)
class Routing:
    """`experts[t][l][j]` is token t's j-th expert in MoE layer l; `weights` its routing weight (0..1)."""

    layers: int
    top_k: int
    num_experts: int
    prompt_tokens: int  # rows [0, prompt_tokens) are the prompt's, the rest the answer's
    tokens: tuple[str, ...]  # each row's token as text
    experts: bytes
    weights: bytes  # one byte per weight, value / 255
    shared: str = ""  # what the shared experts are (always on), in words

    @property
    def width(self) -> int:
        return 2 if self.num_experts > 256 else 1

    @property
    def rows(self) -> int:
        return len(self.tokens)

    def expert(self, row: int, layer: int, j: int) -> int:
        at = ((row * self.layers + layer) * self.top_k + j) * self.width
        return int.from_bytes(self.experts[at:at + self.width], "little")

    def weight(self, row: int, layer: int, j: int) -> float:
        return self.weights[(row * self.layers + layer) * self.top_k + j] / 255

    @classmethod
    def pack(cls, experts: Sequence[Sequence[Sequence[int]]], weights: Sequence[Sequence[Sequence[float]]],
             tokens: Sequence[str], prompt_tokens: int, num_experts: int, shared: str = "") -> Routing:
        """From nested lists `[tokens][layers][k]`, keeping the last `MAX_TOKENS` rows."""
        drop = max(0, len(tokens) - MAX_TOKENS)
        experts, weights, tokens = experts[drop:], weights[drop:], tokens[drop:]
        layers = len(experts[0]) if experts else 0
        top_k = len(experts[0][0]) if layers else 0
        width = 2 if num_experts > 256 else 1
        ids = b"".join(int(e).to_bytes(width, "little") for row in experts for layer in row for e in layer)
        quantized = bytes(min(255, max(0, round(float(w) * 255))) for row in weights for layer in row for w in layer)
        return cls(layers, top_k, num_experts, max(0, prompt_tokens - drop), tuple(tokens), ids, quantized, shared)

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "top_k": self.top_k, "num_experts": self.num_experts,
                "prompt_tokens": self.prompt_tokens, "tokens": list(self.tokens), "shared": self.shared,
                "experts": base64.b64encode(self.experts).decode(), "weights": base64.b64encode(self.weights).decode()}

    @classmethod
    def problems(cls, data: Any) -> list[str]:
        """What is wrong with routing read from outside (an import); empty when it is sound."""
        if not isinstance(data, dict):
            return [f"routing must be an object; got {type(data).__name__}"]
        found = [f"unknown routing key {key!r}" for key in sorted(set(data) - _KEYS)]
        found += [f"routing lacks {key!r}" for key in sorted(_KEYS - {"shared"} - set(data))]
        if found:
            return found
        ints = ("layers", "top_k", "num_experts", "prompt_tokens")
        if not all(isinstance(data[k], int) and not isinstance(data[k], bool) and data[k] >= 0 for k in ints):
            return ["routing layers, top_k, num_experts and prompt_tokens must be whole numbers"]
        tokens = data["tokens"]
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens) or len(tokens) > MAX_TOKENS:
            return [f"routing tokens must be a list of at most {MAX_TOKENS} strings"]
        try:
            experts = base64.b64decode(data["experts"], validate=True)
            weights = base64.b64decode(data["weights"], validate=True)
        except (TypeError, ValueError):
            return ["routing experts and weights must be base64"]
        cells = len(tokens) * data["layers"] * data["top_k"]
        width = 2 if data["num_experts"] > 256 else 1
        if len(experts) != cells * width or len(weights) != cells or data["prompt_tokens"] > len(tokens):
            return ["routing sizes do not match its tokens, layers and top_k"]
        return []

    @classmethod
    def from_dict(cls, data: Any) -> Routing | None:
        """Stored or imported routing, or None when it is not sound."""
        if cls.problems(data):
            return None
        return cls(data["layers"], data["top_k"], data["num_experts"], data["prompt_tokens"], tuple(data["tokens"]),
                   base64.b64decode(data["experts"]), base64.b64decode(data["weights"]), str(data.get("shared", "")))


def entropy_bits(counts: Sequence[int]) -> float:
    """Shannon entropy of a load distribution, in bits (log2 of the experts used, when used evenly)."""
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts if c) if total else 0.0
