"""Where a plan's config.json comes from: a file or folder, or a registry row's copy (never the network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model_loader.registry import ModelSpec
from planner.facts import PlanError

MAX_CONFIG_BYTES = 1 << 20  # a real config.json is a few KiB


def read_config(path: Path) -> dict[str, Any]:
    """The dict of a config.json file (a folder means its config.json)."""
    path = path / "config.json" if path.is_dir() else path
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise PlanError(f"{path} is larger than 1 MiB: that is not a model's config.json.")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlanError(f"Cannot read {path}: {exc}. Give a folder with a config.json, or the file itself.") from None
    if not isinstance(data, dict) or not data.get("model_type"):
        raise PlanError(f"{path} is not a transformers config.json (no model_type): give the model's own config.")
    return data


def config_for_spec(spec: ModelSpec) -> dict[str, Any]:
    """A registry row's config: its `config` copy, else a local row's folder; a PlanError when there is neither."""
    if spec.config is not None:
        return read_config(spec.config)
    if spec.source == "local" and spec.path is not None:
        return read_config(spec.path)
    raise PlanError(f"No config is cached for {spec.id!r}: run `python -m planner {spec.where}` (it fetches "
                    "config.json alone), download the model, or give its row a `config` copy of config.json.")
