"""Judging a memory plan against the machine: GPUs when there are any, system RAM when there are none."""

from __future__ import annotations

from types import SimpleNamespace

from planner.machine_fit import judge_cpu_plan, judge_gpu_plan

GIB = 1024**3


def a_plan(**fields):
    base = dict(verdict="fits", advice="Loads in bf16.", weight_bytes=0, kv_bytes=0, working_bytes=0)
    return SimpleNamespace(**(base | fields))


def test_cpu_only_machine_fits_what_its_ram_holds():
    small = judge_cpu_plan(a_plan(weight_bytes=3 * 10**6, kv_bytes=10**6, working_bytes=10**6), 23 * GIB, "float32")
    assert small.fits and small.headline.startswith("Fits in RAM") and small.target == "CPU: 23.0 GiB RAM, no GPU"
    big = judge_cpu_plan(a_plan(weight_bytes=57 * GIB), 23 * GIB, "float32")
    assert not big.fits and big.headline == "Does not fit this machine"
    assert "Needs about 57.0 GiB in float32" in big.detail and "2x24GiB" in big.detail
    # 80% of RAM is the limit: the rest of the system needs room too
    assert not judge_cpu_plan(a_plan(weight_bytes=int(19 * GIB)), 23 * GIB, "float32").fits


def test_gpu_plans_keep_the_planner_verdict():
    ok = judge_gpu_plan(a_plan(verdict="fits with 1 GPU"), [24 * GIB, 24 * GIB])
    assert ok.fits and ok.headline == "Fits with 1 GPU" and ok.target == "2 x 24.0 GiB GPUs"
    no = judge_gpu_plan(a_plan(verdict="does not fit", advice="use 3 x 24.0 GiB"), [24 * GIB, 80 * GIB])
    assert not no.fits and no.headline == "Does not fit" and no.target == "24.0 GiB + 80.0 GiB GPUs"
    assert no.detail == "use 3 x 24.0 GiB"
    assert not judge_gpu_plan(a_plan(verdict="needs 4-bit"), [12 * GIB]).fits
