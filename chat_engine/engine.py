"""The one owner of the loaded model: loads, swaps, frees, and hands out chat streams."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from chat_engine.backend import TransformersBackend
from chat_engine.budget import Budget
from chat_engine.params import GenerationParams
from chat_engine.prompt import Message
from chat_engine.slots import SlotQueue
from chat_engine.stream import ChatStream
from model_loader.checkpoint_check import verify_checkpoint
from model_loader.devices import DeviceFacts, probe_devices
from model_loader.download import DownloadProgress, model_dir
from model_loader.errors import ModelLoadError, ModelNotLoadedError, MoEChatError
from model_loader.loader import LoadedModel, load_checkpoint, load_tokenizer
from model_loader.machine_fit import MachineFit, fit
from model_loader.memory import MemorySnapshot, free_cached_memory, snapshot
from model_loader.placement import LoadOptions, Placement, plan_placement
from model_loader.registry import ModelSpec
from model_loader.settings import Settings

log = logging.getLogger(__name__)
State = Literal["empty", "loading", "ready", "error"]
Stage = Literal["preparing", "downloading", "loading", "done", "failed", "cancelled"]


@dataclass(frozen=True)
class EngineStatus:
    """What the sidebar shows about the model."""

    state: State
    model_id: str | None = None
    model_name: str | None = None
    message: str = ""
    device_summary: str = ""
    dtype: str = ""
    kernels: str = ""
    load_seconds: float | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadJob:
    """A download-and-load running in the background, outside any page run, so a refresh does not restart it."""

    model_id: str
    model_name: str
    stage: Stage
    message: str = ""
    progress: DownloadProgress | None = None

    @property
    def running(self) -> bool:
        return self.stage in ("preparing", "downloading", "loading")


class Engine:
    """Exactly one model resident at a time, shared by every browser session (thread-safe).

    Loading another model (or unloading) first cancels every running or queued generation, of every
    session, with a reason each reader gets (`ChatStream.interruption`), waits until they have all
    ended, drops the old model and returns its memory; only then does the new one load. Weights are
    never freed under a running generation.
    """

    def __init__(self, settings: Settings, devices: DeviceFacts | None = None) -> None:
        self.settings = settings
        self.devices = devices if devices is not None else probe_devices()
        self._lock = threading.RLock()
        self._backend: TransformersBackend | None = None
        self._status = EngineStatus(state="empty", message="No model loaded.")
        self._streams: set[ChatStream] = set()
        self._by_owner: dict[str, ChatStream] = {}
        self._job: LoadJob | None = None
        self._job_cancel = threading.Event()
        self._job_lock = threading.Lock()

    @property
    def has_gpu(self) -> bool:
        return self.devices.cuda_count > 0

    def status(self) -> EngineStatus:
        return self._status

    def load(self, spec: ModelSpec, options: LoadOptions | None = None,
             on_stage: Callable[[str], None] | None = None,
             on_progress: Callable[[DownloadProgress], None] | None = None,
             cancel: threading.Event | None = None) -> EngineStatus:
        """Make `spec` the loaded model (no-op if it already is, with the same placement).

        The files are fetched and checked, and the tokenizer loaded, while the current model keeps
        answering; only then is the current model freed and the new one loaded. Raises a `MoEChatError`
        with advice on failure.
        """
        say = on_stage or (lambda _msg: None)
        try:
            placement = self.preview_placement(options, spec)
            current = self._backend
            if current is not None and current.loaded.spec == spec and current.loaded.placement == placement:
                return self._status
            say(f"Locating the files of {spec.name} ({spec.where})...")
            folder = model_dir(spec, self.settings, on_progress=on_progress, cancel=cancel)
            say(f"Checking the files in {folder}...")
            verify_checkpoint(folder)  # a damaged file found now leaves the current model serving
            tokenizer = load_tokenizer(spec, folder)
        except MoEChatError as exc:
            if self._backend is None:
                self._status = EngineStatus(state="error", model_id=spec.id, model_name=spec.name, message=str(exc))
            raise
        with self._lock:
            self._unload_locked(f"Stopped: the model is being switched to {spec.name}.")
            self._status = EngineStatus(state="loading", model_id=spec.id, model_name=spec.name,
                                        message=f"Loading {spec.name}...")
            try:
                say(f"Loading weights from {folder} ({placement.dtype} on {placement.device})...")
                loaded = load_checkpoint(spec, folder, placement, tokenizer)
            except MoEChatError as exc:
                self._status = EngineStatus(state="error", model_id=spec.id, model_name=spec.name, message=str(exc))
                free_cached_memory()
                raise
            except Exception as exc:  # anything unforeseen still reaches the user as advice
                error = ModelLoadError(f"{spec.name} failed to load: {type(exc).__name__}: {exc}")
                self._status = EngineStatus(state="error", model_id=spec.id, model_name=spec.name,
                                            message=str(error))
                free_cached_memory()
                raise error from exc
            self._backend = TransformersBackend(loaded, self.settings, SlotQueue(max(1, self.settings.concurrency)))
            self._status = self._ready_status(loaded)
            return self._status

    def preview_placement(self, options: LoadOptions | None, spec: ModelSpec | None = None) -> Placement:
        """The placement a load with `options` would use on this machine (raises if impossible)."""
        name = spec.id.replace("/", "--").replace(":", "-") if spec else "model"
        folder = self.settings.cache_dir / "offload" / name
        return plan_placement(self.devices, self.settings, options, offload_folder=folder)

    def start_load(self, spec: ModelSpec, options: LoadOptions | None = None) -> LoadJob:
        """Download and load in a background thread; a second request while one runs returns the running job."""
        with self._job_lock:
            if self._job is not None and self._job.running:
                return self._job
            self._job_cancel = threading.Event()
            self._job = LoadJob(spec.id, spec.name, "preparing", f"Preparing {spec.name}...")
            cancel = self._job_cancel
        threading.Thread(target=self._run_job, args=(spec, options, cancel), name="moe-chat-load",
                         daemon=True).start()
        return self._job

    def _run_job(self, spec: ModelSpec, options: LoadOptions | None, cancel: threading.Event) -> None:
        def update(**changes) -> None:
            with self._job_lock:
                self._job = replace(self._job, **changes)

        def on_stage(message: str) -> None:
            update(stage="loading" if message.startswith(("Loading", "Checking")) else "downloading", message=message)

        try:
            self.load(spec, options, on_stage=on_stage, on_progress=lambda p: update(progress=p), cancel=cancel)
        except MoEChatError as exc:
            update(stage="cancelled" if cancel.is_set() else "failed", message=str(exc))
        except Exception as exc:  # a background thread must never die silently
            log.exception("loading %s failed", spec.id)
            update(stage="failed", message=f"{spec.name} failed to load: {type(exc).__name__}: {exc}")
        else:
            update(stage="done", message=f"{spec.name} is ready.")

    def job(self) -> LoadJob | None:
        """The current or last background load, for the page to show."""
        return self._job

    def cancel_job(self) -> None:
        """Abandon a running download (a load already under way finishes)."""
        self._job_cancel.set()

    @staticmethod
    def _ready_status(loaded: LoadedModel) -> EngineStatus:
        return EngineStatus(state="ready", model_id=loaded.spec.id, model_name=loaded.spec.name,
                            message=f"{loaded.spec.name} is ready.", device_summary=loaded.device_summary,
                            dtype=loaded.placement.dtype, kernels=loaded.kernels, load_seconds=loaded.load_seconds,
                            warnings=loaded.warnings)

    def unload(self) -> None:
        """Cancel generations and free the model."""
        with self._lock:
            self._unload_locked("Stopped: the model was unloaded.")
            self._status = EngineStatus(state="empty", message="No model loaded.")

    def _unload_locked(self, reason: str) -> None:
        # Queued ones first, so none of them takes the slot a cancelled running one gives back.
        for stream in sorted(self._streams, key=lambda s: s.queue_position == 0):
            stream.cancel(reason)
        for stream in list(self._streams):
            if not stream.join(timeout=60.0):
                log.warning("a generation did not stop within 60 s of cancellation")
        self._streams.clear()
        self._by_owner.clear()
        if self._backend is not None:
            log.info("unloading %s", self._backend.loaded.spec.id)
            self._backend = None
            free_cached_memory()

    def _require_backend(self) -> TransformersBackend:
        backend = self._backend
        if backend is None:
            raise ModelNotLoadedError("No model is loaded: choose one in the sidebar and press Load.")
        return backend

    def default_params(self) -> GenerationParams:
        return self._require_backend().default_params()

    def render_prompt(self, messages: Sequence[Message]) -> str:
        return self._require_backend().render_prompt(messages)

    def chat(self, messages: Sequence[Message], params: GenerationParams | None = None,
             stop: threading.Event | None = None, owner: str | None = None) -> ChatStream:
        """Start answering `messages`; iterate the returned stream for the text.

        `owner` names who asks (a browser session): a new request of the same owner first cancels that
        owner's running generation and waits for it, so a page rerun never leaves one running behind it.
        Older turns that no longer fit the context are left out (`stream.budget.notice` says how many).
        """
        if owner is not None:
            previous = self._by_owner.pop(owner, None)
            if previous is not None:
                previous.cancel()
                previous.join(timeout=30.0)
        with self._lock:
            backend = self._require_backend()
            stream = backend.stream_chat(messages, params or backend.default_params(), stop)
            self._streams = {s for s in self._streams if not s.join(timeout=0)} | {stream}
            if owner is not None:
                self._by_owner[owner] = stream
            return stream

    def cancel(self, owner: str) -> None:
        """Stop the owner's running generation, if any (a closed tab, a Stop click)."""
        stream = self._by_owner.pop(owner, None)
        if stream is not None:
            stream.cancel()

    def context_budget(self, messages: Sequence[Message], max_new_tokens: int) -> Budget:
        """How `messages` would be sent now: tokens counted with the model's tokenizer and template."""
        return self._require_backend().budget(messages, max_new_tokens)

    def plan_fit(self, spec: ModelSpec, dtype: str = "bf16", gpu_bytes: Sequence[int] | None = None,
                 context: int | None = None) -> MachineFit:
        """Will `spec` fit this machine's GPUs (or `gpu_bytes`, imaginary ones), before any download?"""
        from model_loader.planner import facts_cache_dir

        gpus = [g.total_bytes for g in self.devices.gpus] if gpu_bytes is None else list(gpu_bytes)
        return fit(spec, gpus, snapshot().system_total_bytes, dtype, self.settings.cpu_dtype, context,
                   facts_cache_dir(self.settings))

    def memory(self) -> MemorySnapshot:
        return snapshot()

    def close(self) -> None:
        """Release everything (called when the page's resource cache drops the engine)."""
        self.unload()
