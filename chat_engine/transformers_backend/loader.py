"""How an in-process backend comes to be: files fetched and checked, tokenizer loaded, then the weights."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cached_property

from chat_engine.interface import Backend, LoadStage
from chat_engine.transformers_backend.backend import TransformersBackend
from common.errors import ModelLoadError
from common.settings import Settings
from model_loader.checkpoint_check import read_config, verify_checkpoint
from model_loader.devices import DeviceFacts, probe_devices
from model_loader.download import DownloadProgress, model_dir
from model_loader.loader import check_quantized_checkpoint, load_checkpoint, load_tokenizer
from model_loader.memory import free_cached_memory
from model_loader.placement import LoadOptions, Placement, offload_folder, plan_placement
from model_loader.registry import ModelSpec


class TransformersLoader:
    """Loads registry rows into this process with transformers (the `BackendLoader` of backend "transformers")."""

    def __init__(self, settings: Settings, devices: DeviceFacts | None = None,
                 placement: Placement | None = None) -> None:
        self.settings = settings
        self._devices = devices
        self._placement = placement  # fixed instead of planned: benchmarks and tests (e.g. 4-bit on the CPU)

    @cached_property
    def devices(self) -> DeviceFacts:
        return self._devices if self._devices is not None else probe_devices()

    def placement(self, spec: ModelSpec, options: LoadOptions | None) -> Placement:
        if self._placement is not None:
            return self._placement
        return plan_placement(self.devices, self.settings, options, offload_folder=offload_folder(self.settings, spec))

    def same_load(self, backend: Backend, spec: ModelSpec, options: LoadOptions | None) -> bool:
        loaded = getattr(backend, "loaded", None)
        return loaded is not None and loaded.spec == spec and loaded.placement == self.placement(spec, options)

    def prepare(self, spec: ModelSpec, options: LoadOptions | None, *, on_stage: Callable[[LoadStage], None],
                on_progress: Callable[[DownloadProgress], None] | None = None,
                cancel: threading.Event | None = None) -> Callable[[], Backend]:
        placement = self.placement(spec, options)
        problem = self.devices.cuda_problem
        if problem is not None and spec.gpu_only and placement.device == "cpu" and self.settings.device != "cpu":
            raise ModelLoadError(f"{spec.name} needs the GPUs, and torch cannot use them: {problem} "
                                 "(MOE_CHAT_DEVICE=cpu loads it on the CPU anyway).")
        if spec.config is not None:  # a GPTQ row without its backend is refused before its download
            check_quantized_checkpoint(spec, read_config(spec.config), placement)
        on_stage(LoadStage("downloading", f"Locating the files of {spec.name} ({spec.where})..."))
        folder = model_dir(spec, self.settings, on_progress=on_progress, cancel=cancel)
        on_stage(LoadStage("checking", f"Checking the files in {folder}..."))
        verify_checkpoint(folder)  # a damaged file found now leaves the current model serving
        check_quantized_checkpoint(spec, read_config(folder / "config.json"), placement)  # and when it is local
        tokenizer = load_tokenizer(spec, folder)

        def load() -> Backend:
            where = f"{placement.dtype} on {placement.device}"
            on_stage(LoadStage("loading", f"Loading weights from {folder} ({where})..."))
            try:
                return TransformersBackend(load_checkpoint(spec, folder, placement, tokenizer), self.settings)
            except BaseException:
                free_cached_memory()  # whatever the failed load left on the GPUs goes back
                raise

        return load
