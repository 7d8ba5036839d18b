"""The driver's facts as its tools print them, and the rule that says whether this torch can use its GPUs."""

from __future__ import annotations

import pytest

from model_loader.cuda_builds import TorchFacts, cuda_problem, install_command
from model_loader.devices import cuda_of_version_py
from model_loader.gpu_driver import DriverFacts, DriverGpu, cuda_for_driver, parse_proc, parse_smi

SMI_BANNER = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.14              Driver Version: 550.54.14      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""
SMI_QUERY = "0, NVIDIA GeForce RTX 4090, 24564, 8.9\n1, NVIDIA GeForce RTX 4090, 24564, 8.9\n"
PROC_VERSION = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
                "GCC version:  gcc version 11.4.0 (Ubuntu 11.4.0-1ubuntu1~22.04)\n")
PROC_GPU = "Model: \t\t Tesla V100-SXM2-32GB\nIRQ:   \t\t 47\nGPU UUID: \t GPU-0c\n"

TWO_4090 = DriverFacts(version="550.54.14", cuda=(12, 4), source="nvidia-smi",
                       gpus=(DriverGpu(0, "NVIDIA GeForce RTX 4090", 24 * 2**30, (8, 9)),
                             DriverGpu(1, "NVIDIA GeForce RTX 4090", 24 * 2**30, (8, 9))))


def test_nvidia_smi_gives_the_driver_its_cuda_and_each_gpu():
    facts = parse_smi(SMI_QUERY, SMI_BANNER)
    assert (facts.version, facts.cuda, len(facts.gpus)) == ("550.54.14", (12, 4), 2)
    assert facts.gpus[1] == DriverGpu(1, "NVIDIA GeForce RTX 4090", 24564 * 2**20, (8, 9))


def test_proc_gives_the_driver_and_the_cuda_its_version_runs():
    facts = parse_proc(PROC_VERSION, [PROC_GPU])
    assert (facts.version, facts.cuda) == ("535.104.05", (12, 2))
    assert facts.gpus == (DriverGpu(0, "Tesla V100-SXM2-32GB", 0),)


@pytest.mark.parametrize(("driver", "cuda"), [("580.65.06", (13, 0)), ("570.86.10", (12, 8)), ("560.35.03", (12, 6)),
                                              ("550.54.14", (12, 4)), ("525.60.13", (12, 0)), ("470.82.01", None)])
def test_the_newest_cuda_a_driver_runs(driver, cuda):
    assert cuda_for_driver(driver) == cuda


def test_torch_version_py_names_its_cuda_build():
    assert cuda_of_version_py("cuda: Optional[str] = '13.0'\nhip = None\n") == "13.0"
    assert cuda_of_version_py("cuda: Optional[str] = None\n") is None


def test_torch_built_for_a_newer_cuda_than_the_driver_says_so_with_the_build_to_install():
    problem = cuda_problem(TWO_4090, TorchFacts("2.14.1+cu130", "13.0", visible=0))
    assert problem.reason == ("torch 2.14.1 is built for CUDA 13.0; this driver (550.54.14) supports up to CUDA 12.4")
    assert problem.command == "pip install torch==2.6.0 --index-url https://download.pytorch.org/whl/cu124"


def test_a_cpu_build_of_torch_on_a_gpu_box_is_a_problem_with_the_install_command():
    problem = cuda_problem(TWO_4090, TorchFacts("2.13.0+cpu", None, visible=0))
    assert "CPU-only build" in problem.reason and "2 GPU(s)" in problem.reason
    assert problem.command.endswith("/cu124")


@pytest.mark.parametrize(("cuda", "tag"), [((13, 0), "cu130"), ((12, 9), "cu128"), ((12, 6), "cu126"),
                                           ((12, 5), "cu124"), ((12, 2), "cu118"), ((11, 4), None)])
def test_the_build_chosen_runs_on_the_driver(cuda, tag):
    command = install_command(cuda)
    assert command.endswith(f"/{tag}") if tag else command == ""


def test_no_problem_when_torch_uses_every_gpu_or_there_is_no_driver():
    assert cuda_problem(TWO_4090, TorchFacts("2.6.0+cu124", "12.4", visible=2)) is None
    assert cuda_problem(DriverFacts(), TorchFacts("2.13.0+cpu", None)) is None


def test_hidden_gpus_are_named_with_the_variable_that_hides_them():
    problem = cuda_problem(TWO_4090, TorchFacts("2.6.0+cu124", "12.4", visible=1), visible_env="0")
    assert problem.reason == "torch sees 1 of the 2 GPUs the driver shows (CUDA_VISIBLE_DEVICES=0)"


def test_a_driver_too_old_for_any_build_says_to_update_it():
    old = DriverFacts(version="470.82.01", cuda=(11, 4), gpus=TWO_4090.gpus)
    problem = cuda_problem(old, TorchFacts("2.14.1+cu130", "13.0", visible=0))
    assert problem.command == "" and "update the NVIDIA driver" in problem.fix
