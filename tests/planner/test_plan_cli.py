"""`python -m planner` as a user runs it: a subprocess in the repository root, offline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import planner.cli as plan_cli
from model_loader import devices
from planner import gpus as plan_gpus
from planner.gpus import detected_gpus, might_have_gpus

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"schema", "model", "model_type", "architecture", "dtype", "context", "params", "experts", "weight_bytes",
          "quantized",
          "kv_cache", "working_memory", "gpus", "spilled", "device_map", "max_context", "max_position_embeddings",
          "verdict", "gpus_needed", "advice", "rule_of_thumb_bytes"}
SEEDS = ("qwen1.5-moe-a2.7b-chat", "xverse-moe-a4.2b", "demo-moe")
# `python -m planner ARGS`, then one more stderr line naming the heavy modules it imported
WRAPPER = """import runpy, sys
try:
    runpy.run_module("planner", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
else:
    code = 0
print("imported:", ",".join(m for m in ("torch", "transformers") if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


class Run:
    """One CLI run: its result, its wall time, and the heavy modules it imported."""

    def __init__(self, args: tuple[str, ...], env: dict[str, str] | None):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env=env)
        self.seconds = time.perf_counter() - start
        *rest, last = done.stderr.splitlines() or [""]
        assert last.startswith("imported:"), done.stderr
        self.imported = {m for m in last.split(":", 1)[1].strip().split(",") if m}
        self.returncode, self.stdout, self.stderr = done.returncode, done.stdout, "\n".join(rest)


def run(*args: str, env: dict[str, str] | None = None) -> Run:
    return Run(args, env)


def fresh_env(tmp_path: Path, bytecode: bool = False) -> dict[str, str]:
    """A fresh clone's first run: an empty plan cache and, unless `bytecode`, no compiled bytecode at all (not even
    the standard library's: slower than any real first run)."""
    env = {**os.environ, "MOE_CHAT_CACHE_DIR": str(tmp_path / "cache")}
    return env if bytecode else {**env, "PYTHONPYCACHEPREFIX": str(tmp_path / "pyc")}


@pytest.mark.parametrize("model_id,gpus,expected", [
    ("qwen1.5-moe-a2.7b-chat", "2x24GiB",
     ["FITS", "14.32 B total", "2.69 B active", "26.67 GiB in bf16", "192.0 KiB per token",
      "embed_tokens, layers 0-11", "layers 12-23, norm, lm_head", "32,768 tokens", "34.36 GB"]),
    ("xverse-moe-a4.2b", "2x24GiB",
     ["NEEDS 8-BIT", "25.78 B total", "4.23 B active", "48.02 GiB in bf16", "280.0 KiB per token",
      "would not fit on the GPUs", "3 x 24.0 GiB", "61.87 GB"]),
    ("xverse-moe-a4.2b", "3x24GiB", ["FITS", "8,192 tokens"]),
    ("xverse-moe-a4.2b --dtype int4", "1x24GiB",
     ["FITS", "13.12 GiB in int4: 25.26 B weights (98.0%) at 4.13 bits with their scales", "8,192 tokens"]),
    ("demo-moe", "1x8GiB", ["FITS", "720.48 K total", "layers 0-1", "2,048 tokens"]),
])
def test_table_for_each_model(model_id, gpus, expected):
    done = run(*model_id.split(), "--gpus", gpus)
    assert done.returncode == 0, done.stderr
    for text in expected:
        assert text in done.stdout, f"{text!r} missing from:\n{done.stdout}"
    assert re.search(r"^Verdict\s+\S", done.stdout, re.MULTILINE)
    assert done.seconds < 5, f"{model_id} took {done.seconds:.1f} s"


def test_json_has_the_documented_fields():
    done = run("qwen1.5-moe-a2.7b-chat", "--gpus", "2x24GiB", "--context", "8192", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) == FIELDS
    assert all(f"  {field}" in plan_cli.__doc__ for field in FIELDS)  # the docstring lists every field
    assert data["params"]["total"] == 14_315_784_192 and data["kv_cache"]["bytes_per_token"] == 196_608
    assert data["context"] == 8192 and data["verdict"] == "fits" and data["gpus_needed"] == 2
    assert [g["layers"] for g in data["gpus"]] == [list(range(12)), list(range(12, 24))]
    assert data["kv_cache"]["bytes_at_context"] == 196_608 * 8192
    assert done.seconds < 5


def test_int4_and_a_config_path(tmp_path):
    done = run(str(ROOT / "model_loader" / "configs" / "xverse-moe-a4.2b.json"), "--gpus", "24GiB",
               "--dtype", "int4", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    # per-expert nf4: every expert is quantized, so one 24 GiB card holds the whole model and its full window
    assert data["dtype"] == "int4" and data["verdict"] == "fits" and 13 * 2**30 < data["weight_bytes"] < 14 * 2**30
    assert data["max_context"] == 8192 and "fused" not in data["advice"]
    assert data["quantized"]["params"] / data["params"]["total"] > 0.95


@pytest.mark.parametrize("args,message", [
    (["no-such-model"], "is not a registry id"),
    (["demo-moe", "--context", "99999"], "longer than this model's window"),
])
def test_bad_input_is_one_clear_line(args, message):
    done = run(*args)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_bad_gpu_list_is_a_usage_error():
    done = run("demo-moe", "--gpus", "two big ones")
    assert done.returncode == 2 and "not a GPU list" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("model_id", SEEDS)
def test_a_fresh_clone_plans_each_model_in_under_5_s_without_torch(model_id, tmp_path):
    """The built-in models' facts ship with the repo: no meta build, no torch, nothing written to the plan cache."""
    cold = run(model_id, "--gpus", "2x24GiB", env=fresh_env(tmp_path))
    assert cold.returncode == 0, cold.stderr
    assert "Verdict" in cold.stdout and not cold.imported, f"imported {cold.imported}"
    assert not (tmp_path / "cache").exists()
    assert cold.seconds < 5, f"cold {model_id} took {cold.seconds:.1f} s"
    warm = run(model_id, "--gpus", "2x24GiB", env=fresh_env(tmp_path, bytecode=True))  # the same cache dir
    assert warm.stdout == cold.stdout and warm.seconds < 5
    print(f"{model_id}: cold {cold.seconds:.2f} s, warm {warm.seconds:.2f} s")


def test_without_gpus_uses_this_machine(tmp_path):
    done = run("demo-moe", env=fresh_env(tmp_path))
    assert done.returncode == 0, done.stderr
    if not might_have_gpus():  # no GPU driver in sight: torch is not imported just to learn there is no GPU
        assert "NO GPU DETECTED" in done.stdout and "of RAM" in done.stdout
        assert not done.imported and done.seconds < 5


@pytest.mark.slow
def test_an_unshipped_config_is_counted_once_then_read_from_the_cache(tmp_path):
    """A config no file ships: the first run builds it on the meta device (seconds), later runs read the cache."""
    config = {**json.loads((ROOT / "model_loader/checkpoints/demo-moe/config.json").read_text()), "vocab_size": 601}
    (tmp_path / "config.json").write_text(json.dumps(config))
    first = run(str(tmp_path), "--gpus", "1x8GiB", env=fresh_env(tmp_path, bytecode=True))
    assert first.returncode == 0, first.stderr
    assert "FITS" in first.stdout and "torch" in first.imported
    assert list((tmp_path / "cache" / ".moe-chat" / "plans").glob("*.json"))
    again = run(str(tmp_path), "--gpus", "1x8GiB", env=fresh_env(tmp_path, bytecode=True))
    assert again.stdout == first.stdout and not again.imported and again.seconds < 5
    print(f"unshipped config: first {first.seconds:.1f} s, cached {again.seconds:.2f} s")


def test_parse_gpus():
    assert plan_cli.parse_gpus("2x24GiB") == [24 * 2**30] * 2
    assert plan_cli.parse_gpus("24GiB, 80") == [24 * 2**30, 80 * 2**30]
    assert plan_cli.parse_gpus("1x40GB") == [40 * 10**9]


@pytest.mark.parametrize("sign", ["proc", "device", "rocm", "nvidia-smi"])
def test_torch_is_asked_about_gpus_only_where_a_driver_shows(monkeypatch, tmp_path, sign):
    monkeypatch.setattr(plan_gpus, "NVIDIA_PROC", tmp_path / "proc" / "gpus")
    monkeypatch.setattr(plan_gpus, "NVIDIA_DEVICE", tmp_path / "nvidia0")
    monkeypatch.setattr(plan_gpus, "ROCM_DEVICE", tmp_path / "kfd")
    monkeypatch.setattr(plan_gpus, "which", lambda name: None)
    monkeypatch.setattr(plan_gpus, "find_spec", lambda name: None)  # no nvidia-ml-py

    def probe():
        raise AssertionError("torch was asked")

    monkeypatch.setattr(devices, "probe_devices", probe)
    assert not might_have_gpus() and detected_gpus() == []
    if sign == "proc":
        (tmp_path / "proc" / "gpus" / "0000:01:00.0").mkdir(parents=True)
    elif sign == "nvidia-smi":
        monkeypatch.setattr(plan_gpus, "which", lambda name: f"/usr/bin/{name}")
    else:
        (tmp_path / ("nvidia0" if sign == "device" else "kfd")).touch()
    assert might_have_gpus()
    with pytest.raises(AssertionError, match="torch was asked"):
        detected_gpus()
