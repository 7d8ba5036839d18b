"""Model facts once per config: from memory, the facts shipped with the repo, the disk cache, else a meta build."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.settings import Settings
from planner.facts import FACTS_VERSION, ModelFacts, config_text, facts_from_json, facts_to_json
from planner.meta_build import build_facts
from planner.shipped_facts import BAD_FILE, read_shipped_facts

log = logging.getLogger(__name__)


def model_facts(config: Mapping[str, Any], cache_dir: Path | None = None) -> ModelFacts:
    """Facts for a config: from memory, the shipped files, `cache_dir`, else a meta-device build (seconds: torch)."""
    return _cached_facts(config_text(config), str(cache_dir) if cache_dir is not None else None)


@functools.lru_cache(maxsize=32)
def _cached_facts(text: str, cache_dir: str | None) -> ModelFacts:
    shipped = read_shipped_facts(text)
    if shipped is not None:
        return shipped
    from importlib.metadata import version  # off the shipped path only: importing it costs tens of milliseconds

    # the disk cache keys on the transformers version too: that version counted what it holds
    key = hashlib.sha256(f"{FACTS_VERSION}\n{version('transformers')}\n{text}".encode()).hexdigest()[:32]
    file = Path(cache_dir) / f"{key}.json" if cache_dir else None
    if file is not None and file.is_file():
        try:
            return facts_from_json(json.loads(file.read_text(encoding="utf-8")))
        except BAD_FILE as exc:
            log.warning("ignoring the unreadable cached facts %s: %s", file, exc)
    facts = build_facts(json.loads(text))
    if file is not None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(facts_to_json(facts)), encoding="utf-8")
            tmp.replace(file)
        except OSError as exc:  # only costs a rebuild next time
            log.warning("could not cache the model facts in %s: %s", file, exc)
    return facts


def facts_cache_dir(settings: Settings) -> Path:
    """Where counted model facts are kept between runs."""
    return settings.cache_dir / ".moe-chat" / "plans"
