"""What the planner knows about one architecture (`ModelFacts`: every tensor, by module), and its JSON form."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import PlanError  # noqa: F401 - the planner's error, raised by its modules

FACTS_VERSION = 2  # bump when ModelFacts changes shape: cached and shipped facts of other versions are ignored



@dataclass(frozen=True)
class TensorInfo:
    """One parameter or buffer of the meta-built model."""

    name: str  # full dotted name, e.g. "model.layers.0.mlp.experts.gate_up_proj"
    numel: int
    rows: int  # numel / shape[-1], the output rows of its matrices: 8-bit keeps one float32 scale per row
    group: str  # embedding | lm_head | attention | router | routed_experts | shared_experts | norms | dense_mlp | other
    kind: str  # param | quantizable (a weight bitsandbytes converts) | fp32 (kept float32) | buffer | tied
    fixed_bytes: int = 0  # element size of a buffer that does not follow the load dtype; 0: follows it
    pieces: int = 1  # matrices it is quantized as: fused experts become one Linear per expert and projection


@dataclass(frozen=True)
class ModuleInfo:
    """One module: its direct tensors and children, in the order `infer_auto_device_map` walks them."""

    name: str
    cls: str
    params: tuple[TensorInfo, ...]
    buffers: tuple[TensorInfo, ...]
    children: tuple[ModuleInfo, ...]


@dataclass(frozen=True)
class ModelFacts:
    """What the planner needs to know about one architecture, counted from a meta-device build."""

    model_type: str
    architecture: str
    no_split: tuple[str, ...]  # `_no_split_modules`: classes device_map="auto" keeps whole (decoder layers)
    tied: tuple[tuple[str, ...], ...]  # groups of tied parameter names
    num_layers: int
    hidden_size: int
    kv_heads: int
    head_dim: int
    max_position_embeddings: int  # 0: no limit known
    num_experts: int  # 0: a dense model
    experts_per_token: int
    root: ModuleInfo


def walk(module: ModuleInfo) -> Iterator[ModuleInfo]:
    """Every module under (and including) `module`, depth first."""
    yield module
    for child in module.children:
        yield from walk(child)


def config_text(config: Mapping[str, Any]) -> str:
    """The canonical text of a config: what every facts key is a hash of."""
    return json.dumps(dict(config), sort_keys=True, default=str)


def facts_to_json(facts: ModelFacts) -> dict[str, Any]:
    """Facts as plain JSON data (modules and tensors as compact lists)."""
    def module(m: ModuleInfo) -> list:
        return [m.name, m.cls, [_tensor_row(t) for t in m.params], [_tensor_row(t) for t in m.buffers],
                [module(c) for c in m.children]]

    scalars = {k: getattr(facts, k) for k in facts.__dataclass_fields__ if k != "root"}
    return {**scalars, "root": module(facts.root)}


def _tensor_row(t: TensorInfo) -> list:
    return [t.name, t.numel, t.rows, t.group, t.kind, t.fixed_bytes, t.pieces]


def facts_from_json(data: dict[str, Any]) -> ModelFacts:
    """The inverse of `facts_to_json` (raises KeyError / TypeError / ValueError on malformed data)."""
    def module(row: list) -> ModuleInfo:
        name, cls, params, buffers, children = row
        return ModuleInfo(name, cls, tuple(TensorInfo(*t) for t in params), tuple(TensorInfo(*t) for t in buffers),
                          tuple(module(c) for c in children))

    scalars = {k: data[k] for k in ModelFacts.__dataclass_fields__ if k != "root"}
    scalars["no_split"] = tuple(scalars["no_split"])
    scalars["tied"] = tuple(tuple(g) for g in scalars["tied"])
    return ModelFacts(**scalars, root=module(data["root"]))
