"""The benchmarks' command lines: each names its knobs with their defaults, and the smaller values of --quick."""

from __future__ import annotations

import argparse
from collections.abc import Mapping


def parse(doc: str | None, defaults: Mapping[str, int | float], quick: Mapping[str, int | float],
          parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """`--name VALUE` for each default (typed like it), plus `--quick`: seconds, to show that the script still runs."""
    ap = parser or argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in defaults.items():
        ap.add_argument(f"--{name}", type=type(value), default=value)
    shown = ", ".join(f"{name} {value}" for name, value in quick.items())
    ap.add_argument("--quick", action="store_true", help=f"{shown}: checks that it runs, measures nothing")
    args = ap.parse_args()
    if args.quick:
        for name, value in quick.items():
            setattr(args, name, value)
    return args
