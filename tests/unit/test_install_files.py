"""The install files agree: every supported range has an exact pin inside it, and the tests run on those pins."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support.helpers import ROOT


def own_lines(path: Path) -> dict[str, Requirement]:
    """{canonical name: requirement} of a requirements file's own lines (its -r / -c lines left out)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            found[re.sub(r"[-_.]+", "-", req.name).lower()] = req
    return found


def pinned(req: Requirement) -> str:
    (spec,) = req.specifier  # exactly one specifier...
    assert spec.operator == "==", f"{req} is not an exact pin"  # ...and it is ==
    return spec.version


@pytest.mark.parametrize("ranges, pins", [("requirements.in", "requirements.txt"),
                                          ("requirements-dev.in", "requirements-dev.txt")])
def test_every_direct_dependency_is_pinned_inside_its_range_and_torch_stays_a_range(ranges, pins):
    wanted, got = own_lines(ROOT / ranges), own_lines(ROOT / pins)
    assert set(got) == set(wanted)
    for name, req in wanted.items():
        if name == "torch":
            assert got[name].specifier == req.specifier  # a CUDA build already installed must satisfy it
            continue
        assert req.specifier.contains(pinned(got[name])), f"{got[name]} is outside {req}"


def test_requirements_txt_brings_the_constraints_and_they_pin_everything_else():
    assert "-c constraints.txt" in (ROOT / "requirements.txt").read_text().splitlines()
    constraints = own_lines(ROOT / "constraints.txt")
    assert constraints and all(pinned(req) for req in constraints.values())
    direct = set(own_lines(ROOT / "requirements.txt")) | set(own_lines(ROOT / "requirements-dev.txt"))
    assert not direct & set(constraints)
    for name in ("numpy", "jinja2", "pydantic", "starlette"):  # pulled in by transformers / streamlit
        assert name in constraints


@pytest.mark.skipif(os.environ.get("MOE_CHAT_CANARY") == "1", reason="the canary tries newer versions on purpose")
def test_the_tests_run_on_the_pinned_versions():
    """What `bash scripts/test.sh` installs is what these tests exercise."""
    for name, req in {**own_lines(ROOT / "requirements.txt"), **own_lines(ROOT / "requirements-dev.txt")}.items():
        if name == "torch":
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} is not installed: run `bash scripts/test.sh`")
        assert installed == pinned(req), f"{name} {installed} installed, {pinned(req)} pinned"


@pytest.mark.slow
def test_gpu_check_skips_cleanly_without_a_gpu():
    run = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "gpu_check: skipped: no CUDA GPU visible" in run.stdout
