"""Generation parameters: one validated value object, defaults taken from the model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from common.errors import InvalidParameterError


@dataclass(frozen=True)
class Option:
    """One generation option: its type and range (read by the sidebar, the API and `GenerationParams` alike)."""

    name: str  # the GenerationParams field
    kind: type  # int, float or bool
    low: float | None = None
    high: float | None = None
    above_low: bool = False  # the value must be above `low`, not equal to it
    step: float | None = None  # the sidebar's step
    api: str | None = None  # the chat-completions field that sets it
    default: str = "the model's generation_config, else the row's generation table"
    optional: bool = False  # None is a value (seed: random)

    def problem(self, value: Any) -> str | None:
        """Why `value` is not a valid value of this option, or None."""
        if value is None and self.optional:
            return None
        kind_ok = {int: isinstance(value, int), bool: isinstance(value, bool),
                   float: isinstance(value, int | float) and math.isfinite(value)}[self.kind]
        if not kind_ok or (self.kind is not bool and isinstance(value, bool)):
            what = {int: "an integer", float: "a number", bool: "true or false"}[self.kind]
            return f"{self.name} must be {what}{' or empty' if self.optional else ''}; got {value!r}"
        if self.low is not None and self.high is not None and not (
                (value > self.low if self.above_low else value >= self.low) and value <= self.high):
            return f"{self.name} must be in {self.range_text}; got {value!r}"
        return None

    @property
    def range_text(self) -> str:
        def shown(x: float | None) -> str:
            return f"{int(x):,}" if x is not None and float(x).is_integer() else f"{x:g}"

        return f"{'(' if self.above_low else '['}{shown(self.low)}, {shown(self.high)}]"

    @property
    def lowest(self) -> float:
        """The lowest value a widget may offer: `low`, or one step above it when `low` itself is excluded."""
        assert self.low is not None
        return self.low + (self.step or 0) if self.above_low else self.low


OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("max_new_tokens", int, 1, 1_000_000, step=64, api="max_tokens",
           default="MOE_CHAT_MAX_NEW_TOKENS, else the row's generation table"),
    Option("do_sample", bool),
    Option("temperature", float, 0.0, 2.0, above_low=True, step=0.05, api="temperature"),
    Option("top_p", float, 0.0, 1.0, above_low=True, step=0.05, api="top_p"),
    Option("top_k", int, 0, 1_000_000, step=1, api="top_k"),
    Option("repetition_penalty", float, 0.0, 2.0, above_low=True, step=0.01, api="repetition_penalty"),
    Option("seed", int, 0, 2**64 - 1, step=1, api="seed", default="none: random", optional=True),
    Option("ignore_eos", bool, api="ignore_eos", default="false; a row's generation table (benchmark rows)"),
)}


@dataclass(frozen=True)
class GenerationParams:
    """What `generate` is asked to do; a value outside `OPTIONS` raises `InvalidParameterError`."""

    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False  # always produce max_new_tokens (benchmarks, tests)

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = OPTIONS[f.name].problem(getattr(self, f.name))
            if problem is not None:
                raise InvalidParameterError(f"{problem}.")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GenerationParams:
        """Build from a dict, refusing unknown names (a typo must not be ignored silently)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidParameterError(f"Unknown generation parameters {sorted(unknown)}; known: {sorted(known)}.")
        try:
            return cls(**data)
        except TypeError as exc:
            raise InvalidParameterError(f"Invalid generation parameters {dict(data)}: {exc}.") from exc

    def updated(self, **changes: Any) -> GenerationParams:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_defaults(generation_config: Mapping[str, Any], overrides: Mapping[str, Any],
                   max_new_tokens: int) -> GenerationParams:
    """Defaults from the model's generation_config.json, then the registry row, then the app's token limit."""
    known = {f.name for f in fields(GenerationParams)}
    values: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    values.update({k: v for k, v in generation_config.items() if k in known and v is not None})
    values.update(overrides)
    return GenerationParams.from_mapping(values)
