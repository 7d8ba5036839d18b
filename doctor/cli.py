"""`python -m doctor [--port N]`: one line per check (ok / warn / fail, then the fix); exit 1 when one fails."""

from __future__ import annotations

import argparse
import sys
import time

from common.errors import MoEChatError
from common.settings import Settings
from doctor.checks import Check, run_checks
from doctor.facts import MachineFacts


def report(checks: list[Check], seconds: float) -> str:
    width = max((len(c.name) for c in checks), default=0)
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    summary = (f"{failed} failed, " if failed else "") + f"{warned} warning(s), {len(checks)} checks in {seconds:.1f} s"
    return "\n".join([*(c.line(width) for c in checks), summary])


def main(argv: list[str] | None = None, facts: MachineFacts | None = None) -> int:
    """Print the report; `facts` replaces what this machine shows (the checks of a described machine)."""
    parser = argparse.ArgumentParser(prog="python -m doctor", description=__doc__)
    parser.add_argument("--port", type=int, help="the port to check (default: .streamlit/config.toml's, 6006)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if facts is None:
            from doctor.probe import gather

            facts = gather(Settings.from_env(), args.port)
    except MoEChatError as exc:  # a malformed MOE_CHAT_* variable or models.toml
        print(f"fail  settings {exc}", file=sys.stderr)
        return 1
    checks = run_checks(facts)
    print(report(checks, time.monotonic() - started))
    return 1 if any(c.status == "fail" for c in checks) else 0
