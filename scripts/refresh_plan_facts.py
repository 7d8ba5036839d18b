"""Rebuild planner/plan_facts/*.json from the built-in registry rows' configs, with the installed transformers.

Run it after changing a config copy in the registry, ModelFacts (with FACTS_VERSION) or transformers:
    python scripts/refresh_plan_facts.py           # rewrite the files, drop stale ones
    python scripts/refresh_plan_facts.py --check   # exit 1 if the files differ from a fresh count
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from model_loader.registry import load_registry  # noqa: E402
from planner.shipped_facts import SHIPPED_DIR, count_registry_facts, dump_shipped  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped files, write nothing")
    args = parser.parse_args(argv)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    wanted = {name: dump_shipped(doc) for name, doc in count_registry_facts(load_registry()).items()}
    present = {p.name: p.read_text(encoding="utf-8") for p in SHIPPED_DIR.glob("*.json")}
    if args.check:
        stale = sorted(n for n in wanted.keys() | present.keys() if wanted.get(n) != present.get(n))
        for name in stale:
            print(f"stale: {name}", file=sys.stderr)
        return 1 if stale else 0
    SHIPPED_DIR.mkdir(exist_ok=True)
    for name in present.keys() - wanted.keys():
        (SHIPPED_DIR / name).unlink()
        print(f"removed {name}")
    for name, text in sorted(wanted.items()):
        if present.get(name) != text:
            (SHIPPED_DIR / name).write_text(text, encoding="utf-8")
            print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
