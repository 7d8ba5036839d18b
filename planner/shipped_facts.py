"""Facts shipped in `plan_facts/*.json`: the built-in rows' configs counted ahead of time, so they plan without torch.

Rebuild them with `python scripts/refresh_plan_facts.py`."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from model_loader.registry import BUILTIN_FILE, Registry
from planner.configs import config_for_spec
from planner.facts import FACTS_VERSION, ModelFacts, PlanError, config_text, facts_from_json, facts_to_json
from planner.meta_build import build_facts

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).with_name("plan_facts")
BAD_FILE = (OSError, ValueError, KeyError, TypeError, IndexError)  # what reading a damaged facts file raises


# Keyed on the config and FACTS_VERSION only, not the transformers version, so an upgrade keeps them in use; each file
# records the version that counted it, and tests/unit/test_planner.py recounts them with the installed transformers:
# a count that drifts fails the tests, never silently a user's plan.
def shipped_key(text: str) -> str:
    """The key of shipped facts for a config's canonical text (independent of the transformers version)."""
    return hashlib.sha256(f"{FACTS_VERSION}\n{text}".encode()).hexdigest()[:16]


def read_shipped_facts(text: str, folder: Path = SHIPPED_DIR) -> ModelFacts | None:
    """The shipped facts of a config's canonical text; None when none are shipped (or the file is unreadable)."""
    key = shipped_key(text)
    for file in folder.glob(f"*.{key}.json"):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            if data["key"] == key and data["facts_version"] == FACTS_VERSION:
                return facts_from_json(data["facts"])
        except BAD_FILE as exc:
            log.warning("ignoring the unreadable shipped facts %s: %s", file, exc)
    return None


def shipped_document(facts: ModelFacts, text: str, source: str, rows: list[str],
                     transformers_version: str) -> dict[str, Any]:
    """The content of one shipped file: provenance, then the facts."""
    return {"facts_version": FACTS_VERSION, "key": shipped_key(text), "config": source, "rows": rows,
            "transformers": transformers_version, "facts": facts_to_json(facts)}


def dump_shipped(document: dict[str, Any]) -> str:
    """A shipped file's text: indented, with every innermost list (a tensor row) on one line, for readable diffs."""
    return re.sub(r"\[\n\s*([^\[\]{}]*?)\n\s*\]", lambda m: "[" + re.sub(r",\n\s*", ", ", m[1]) + "]",
                  json.dumps(document, indent=1)) + "\n"


def count_registry_facts(registry: Registry) -> dict[str, dict[str, Any]]:
    """File name -> document for every distinct config of `registry`'s rows, counted now (seconds: meta builds)."""
    import transformers

    base = BUILTIN_FILE.parent  # config paths are written relative to the built-in models.toml
    found: dict[str, tuple[str, str, list[str], str]] = {}  # key -> (label, source, rows, text)
    for spec in registry.specs:
        try:
            config = config_for_spec(spec)
        except PlanError:
            continue  # a hub row without a config copy: nothing to ship
        text = config_text(config)
        where = spec.config or spec.path
        source = where.relative_to(base).as_posix() if where and where.is_relative_to(base) else str(where)
        label, source, rows, text = found.setdefault(shipped_key(text), (spec.id, source, [], text))
        rows.append(spec.id)
    return {f"{label}.{key}.json": shipped_document(build_facts(json.loads(text)), text, source, rows,
                                                    transformers.__version__)
            for key, (label, source, rows, text) in found.items()}
