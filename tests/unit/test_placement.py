"""Placement decisions from device facts alone: dtype, GPUs, memory caps, attention kernel, offload warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ModelLoadError
from common.settings import Settings
from model_loader.devices import DeviceFacts, Gpu
from model_loader.placement import LoadOptions, choose_attention, offload_warning, plan_placement, summarize_device_map

GIB = 1024**3


def gpus(*capabilities: tuple[int, int], memory_gib: int = 24) -> tuple[Gpu, ...]:
    return tuple(Gpu(i, f"GPU{i}", cap, memory_gib * GIB) for i, cap in enumerate(capabilities))


A100, V100, RTX4090 = (8, 0), (7, 0), (8, 9)


@pytest.mark.parametrize("caps, flash, expected, reason", [
    ((A100, A100), True, "flash_attention_2", "sm80 or newer"),
    ((RTX4090,), True, "flash_attention_2", "sm80 or newer"),
    ((A100, A100), False, "sdpa", "flash-attn is not installed"),
    ((V100,), True, "sdpa", "compute capability >= 8.0"),
    ((A100, V100), True, "sdpa", "compute capability >= 8.0"),  # one old GPU rules it out
    ((), True, "sdpa", "CPU"),
])
def test_automatic_attention_choice(caps, flash, expected, reason):
    facts = DeviceFacts(gpus=gpus(*caps), flash_attn_installed=flash)
    chosen, why = choose_attention(facts, tuple(range(len(caps))), "auto")
    assert chosen == expected and reason in why


def test_attention_choice_only_counts_the_gpus_used():
    facts = DeviceFacts(gpus=gpus(A100, V100), flash_attn_installed=True)
    assert choose_attention(facts, (0,), "auto")[0] == "flash_attention_2"


def test_asking_for_flash_attention_where_it_cannot_run_is_explained():
    with pytest.raises(ModelLoadError, match="flash-attn is not installed"):
        choose_attention(DeviceFacts(gpus=gpus(A100)), (0,), "flash_attention_2")
    with pytest.raises(ModelLoadError, match="compute capability 8.0"):
        choose_attention(DeviceFacts(gpus=gpus(V100), flash_attn_installed=True), (0,), "flash_attention_2")


def test_gpu_plan_uses_bf16_auto_map_and_no_cpu_room_without_opt_in():
    plan = plan_placement(DeviceFacts(gpus=gpus(A100, A100, A100)), Settings())
    assert (plan.device, plan.dtype, plan.device_map) == ("cuda", "bfloat16", "auto")
    assert plan.max_memory == {0: "21.60GiB", 1: "21.60GiB", 2: "21.60GiB", "cpu": "0GiB"}
    assert plan.from_pretrained_kwargs()["attn_implementation"] == "sdpa"


def test_gpu_selection_memory_cap_and_offload_opt_in(tmp_path: Path):
    facts = DeviceFacts(gpus=gpus(A100, A100, A100, A100))
    plan = plan_placement(facts, Settings(), LoadOptions(gpus=(1, 3), gpu_memory_gib=20, offload="cpu"))
    assert plan.max_memory == {1: "20.00GiB", 3: "20.00GiB", "cpu": "1000GiB"}
    disk = plan_placement(facts, Settings(), LoadOptions(offload="disk"), offload_folder=tmp_path)
    assert disk.from_pretrained_kwargs()["offload_folder"] == str(tmp_path)
    with pytest.raises(ModelLoadError, match="GPU 5 is not visible"):
        plan_placement(facts, Settings(), LoadOptions(gpus=(5,)))
    with pytest.raises(ModelLoadError, match="No GPU selected"):
        plan_placement(facts, Settings(), LoadOptions(gpus=()))


def test_cpu_plan_and_options_that_need_a_gpu():
    plan = plan_placement(DeviceFacts(), Settings())
    assert (plan.device, plan.dtype, plan.device_map, plan.max_memory) == ("cpu", "float32", None, None)
    assert plan_placement(DeviceFacts(), Settings(), LoadOptions(dtype="bfloat16")).dtype == "bfloat16"
    with pytest.raises(ModelLoadError, match="need a CUDA GPU"):
        plan_placement(DeviceFacts(), Settings(), LoadOptions(quantization="4bit"))
    with pytest.raises(ModelLoadError, match="needs bitsandbytes"):
        plan_placement(DeviceFacts(gpus=gpus(A100)), Settings(), LoadOptions(quantization="8bit"))
    with pytest.raises(ModelLoadError, match="no CUDA GPU is visible"):
        plan_placement(DeviceFacts(), Settings(device="cuda"))
    assert plan_placement(DeviceFacts(gpus=gpus(A100)), Settings(device="cpu")).device == "cpu"
    with pytest.raises(ModelLoadError, match="not one of"):
        LoadOptions(experts="fast")


def test_offload_warning_only_when_layers_leave_the_gpus():
    on_gpus = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "lm_head": 1}
    assert offload_warning(on_gpus) is None
    assert offload_warning(None) is None
    spilled = dict(on_gpus, **{"model.layers.2": "cpu", "model.layers.3": "disk"})
    warning = offload_warning(spilled)
    assert warning is not None and "2 module(s) run from cpu and disk" in warning
    assert summarize_device_map(spilled, "cpu") == "cuda:0 x 2, cuda:1 x 2, cpu x 1, disk x 1"
    assert summarize_device_map(None, "cpu") == "cpu"


def test_quantized_loads_refuse_an_experts_kernel_and_disk_offload():
    facts = DeviceFacts(gpus=gpus(A100), bitsandbytes_installed=True)
    with pytest.raises(ModelLoadError, match="set experts to auto"):
        plan_placement(facts, Settings(), LoadOptions(quantization="4bit", experts="grouped_mm"))
    with pytest.raises(ModelLoadError, match="cannot offload quantized layers to disk"):
        plan_placement(facts, Settings(), LoadOptions(quantization="4bit", offload="disk"), offload_folder=Path("/x"))
    placement = plan_placement(facts, Settings(), LoadOptions(quantization="4bit"))
    assert placement.quantization == "4bit" and placement.experts is None and placement.device_map == "auto"
