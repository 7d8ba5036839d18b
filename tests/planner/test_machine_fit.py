"""Judging a memory plan against the machine: GPUs when there are any, system RAM when there are none."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.machine_fit import judge_cpu_plan, judge_gpu_plan
from planner.planning import model_facts, plan_memory, read_config

GIB = 1024**3
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def qwen():
    return model_facts(read_config(ROOT / "model_loader" / "configs" / "qwen1.5-moe-a2.7b-chat.json"))


@pytest.fixture(scope="module")
def demo():
    return model_facts(read_config(ROOT / "model_loader" / "checkpoints" / "demo-moe" / "config.json"))


def test_cpu_only_machine_fits_what_its_ram_holds(qwen, demo):
    small = judge_cpu_plan(plan_memory(demo, "bf16", [], 2048), 23 * GIB, "float32")
    assert small.fits and small.headline.startswith("Fits in RAM") and small.target == "CPU: 23.0 GiB RAM, no GPU"
    big = judge_cpu_plan(plan_memory(qwen, "bf16", [], 4096), 23 * GIB, "float32")  # 28.3 GiB with its cache
    assert not big.fits and big.headline == "Does not fit this machine"
    assert "Needs about 28.3 GiB in float32" in big.detail and "2x24GiB" in big.detail
    # 80% of RAM is the limit: the rest of the system needs room too
    assert judge_cpu_plan(plan_memory(qwen, "bf16", [], 4096), 36 * GIB, "float32").fits
    assert not judge_cpu_plan(plan_memory(qwen, "bf16", [], 4096), 34 * GIB, "float32").fits


def test_gpu_plans_keep_the_planner_verdict(qwen):
    ok = judge_gpu_plan(plan_memory(qwen, "bf16", [24 * GIB, 24 * GIB], 4096), [24 * GIB, 24 * GIB])
    assert ok.fits and ok.headline == "Fits" and ok.target == "2 x 24.0 GiB GPUs"
    assert ok.detail.startswith("Loads in bf16; 9.44 GiB to spare")
    no = judge_gpu_plan(plan_memory(qwen, "bf16", [8 * GIB], 4096), [8 * GIB])
    assert not no.fits and no.headline == "Does not fit" and no.target == "1 x 8.0 GiB GPUs"
    assert "find no room on 1 x 8.0 GiB" in no.detail
    four_bit = judge_gpu_plan(plan_memory(qwen, "bf16", [12 * GIB], 4096), [12 * GIB])
    assert not four_bit.fits and four_bit.headline == "Needs 4-bit"
    mixed = judge_gpu_plan(plan_memory(qwen, "bf16", [24 * GIB, 80 * GIB], 4096), [24 * GIB, 80 * GIB])
    assert mixed.target == "24.0 GiB + 80.0 GiB GPUs"
