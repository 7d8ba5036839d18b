"""Generation parameters: one validated value object, defaults taken from the model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from common.errors import InvalidParameterError


@dataclass(frozen=True)
class GenerationParams:
    """What `generate` is asked to do; invalid values raise `InvalidParameterError`."""

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
            value = getattr(self, f.name)
            if value is None and f.type == "int | None":
                ok = True
            elif f.type in ("int", "int | None"):
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif f.type == "float":
                ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            else:  # bool
                ok = isinstance(value, bool)
            if not ok:
                raise InvalidParameterError(f"{f.name} must be {f.type.replace('int | None', 'an integer or empty')}; "
                                            f"got {value!r}.")
        checks = [
            (self.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
            (0.0 < self.temperature <= 10.0, "temperature must be in (0, 10]"),
            (0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be 0 (off) or more"),
            (0.0 < self.repetition_penalty <= 10.0, "repetition_penalty must be in (0, 10]"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidParameterError(f"{message}; got {self}.")

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
