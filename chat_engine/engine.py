"""The one owner of the active backend: loads, swaps and frees it, and routes every session's chats to it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

from chat_engine.backends import capabilities_of, loader_for
from chat_engine.budget import Budget
from chat_engine.interface import Backend, BackendLoader, Capabilities, EngineStatus, LoadJob, LoadStage, WaitCallback
from chat_engine.params import GenerationParams
from chat_engine.reply import Reply
from common.errors import ModelLoadError, ModelNotLoadedError, MoEChatError
from common.messages import Message
from common.settings import Settings
from model_loader.download import DownloadProgress
from model_loader.placement import LoadOptions
from model_loader.registry import SERVER_BACKEND, ModelSpec

log = logging.getLogger(__name__)
EMPTY = EngineStatus(state="empty", message="No model loaded.")


class Engine:
    """Exactly one backend active at a time, shared by every browser session (thread-safe).

    Loading another model (or unloading) first cancels every running or queued reply, of every session, with a
    reason each reader gets (`Reply.interruption`), waits until they have all ended, and closes the old backend;
    only then does the new one load. Weights are never freed under a running generation.
    """

    def __init__(self, settings: Settings, loader: Callable[[str, Settings], BackendLoader] = loader_for) -> None:
        self.settings = settings
        self._loader = loader
        self._lock = threading.RLock()
        self._backend: Backend | None = None
        self._status = EMPTY
        self._replies: set[Reply] = set()
        self._by_owner: dict[str, Reply] = {}
        self._job: LoadJob | None = None
        self._job_cancel = threading.Event()
        self._job_lock = threading.Lock()

    def status(self) -> EngineStatus:
        return self._status

    @property
    def backend(self) -> Backend | None:
        """The active backend, or None (for tests and tools that look inside it; the page does not)."""
        return self._backend

    def load(self, spec: ModelSpec, options: LoadOptions | None = None,
             on_stage: Callable[[LoadStage], None] | None = None,
             on_progress: Callable[[DownloadProgress], None] | None = None,
             cancel: threading.Event | None = None) -> EngineStatus:
        """Make `spec` the active model (no-op if it already is, loaded the same way).

        The backend's files are fetched and checked while the current one keeps answering; only then is the
        current one closed and the new one loaded. Raises a `MoEChatError` with advice on failure.
        """
        say = on_stage or (lambda _stage: None)
        try:
            loader = self._loader(spec.backend, self.settings)
            current = self._backend
            if current is not None and current.spec == spec and loader.same_load(current, spec, options):
                return self._status
            load_new = loader.prepare(spec, options, on_stage=say, on_progress=on_progress, cancel=cancel)
        except MoEChatError as exc:
            if self._backend is None:
                self._status = EngineStatus(state="error", model_id=spec.id, model_name=spec.name, message=str(exc))
            raise
        with self._lock:
            self._close_locked(f"Stopped: the model is being switched to {spec.name}.")
            self._status = EngineStatus(state="loading", model_id=spec.id, model_name=spec.name,
                                        message=f"Loading {spec.name}...")
            try:
                backend = load_new()
            except MoEChatError as exc:
                self._status = EngineStatus(state="error", model_id=spec.id, model_name=spec.name, message=str(exc))
                raise
            except Exception as exc:  # anything unforeseen still reaches the user as advice
                error = ModelLoadError(f"{spec.name} failed to load: {type(exc).__name__}: {exc}")
                self._status = EngineStatus(state="error", model_id=spec.id, model_name=spec.name,
                                            message=str(error))
                raise error from exc
            self._backend = backend
            self._status = EngineStatus(state="ready", model_id=spec.id, model_name=spec.name,
                                        message=f"{spec.name} is ready.", info=backend.info(),
                                        capabilities=backend.capabilities)
            return self._status

    def start_load(self, spec: ModelSpec, options: LoadOptions | None = None) -> LoadJob:
        """Load in a background thread (the page's one way to load); a request while one runs returns that one."""
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

        try:
            self.load(spec, options, on_stage=lambda s: update(stage=s.name, message=s.message),
                      on_progress=lambda p: update(progress=p), cancel=cancel)
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

    def unload(self) -> None:
        """Stop every reply and free the model."""
        with self._lock:
            self._close_locked("Stopped: the model was unloaded.")
            self._status = EMPTY

    def _close_locked(self, reason: str) -> None:
        # Queued ones first, so none of them takes the slot a cancelled running one gives back.
        for reply in sorted(self._replies, key=lambda r: r.queue_position == 0):
            reply.cancel(reason)
        for reply in list(self._replies):
            if not reply.join(timeout=60.0):
                log.warning("a generation did not stop within 60 s of cancellation")
        self._replies.clear()
        self._by_owner.clear()
        if self._backend is not None:
            log.info("closing %s", self._backend.spec.id)
            backend, self._backend = self._backend, None
            backend.close()

    def _require_backend(self) -> Backend:
        backend = self._backend
        if backend is None:
            raise ModelNotLoadedError("No model is loaded: choose one in the sidebar and press Load.")
        return backend

    def default_params(self) -> GenerationParams:
        return self._require_backend().default_params()

    def context(self) -> int:
        """The loaded model's window: prompt and answer tokens together."""
        return self._require_backend().context

    def render_prompt(self, messages: Sequence[Message]) -> str:
        return self._require_backend().render_prompt(messages)

    def context_budget(self, messages: Sequence[Message], max_new_tokens: int) -> Budget:
        """How `messages` would be sent now: tokens counted with the model's tokenizer and template."""
        return self._require_backend().budget(messages, max_new_tokens)

    def chat(self, messages: Sequence[Message], params: GenerationParams | None = None,
             stop: threading.Event | None = None, owner: str | None = None,
             on_wait: WaitCallback | None = None, client: str | None = None, routing: bool = False,
             expect_model: str | None = None) -> Reply:
        """Start answering `messages`; iterate the returned reply for the text.

        `owner` names who asks (a browser session): a new request of the same owner first cancels that owner's
        running reply and waits for it, so a page rerun never leaves one running behind it. `on_wait` is told the
        reply's place in line while it waits for the model; `client` (the browser's address) is whom the line is
        fair between; `expect_model` refuses the request if another model was loaded since the caller looked (an
        API request must never be answered by a model it did not name). Older turns that no longer fit the
        context are left out (`reply.budget.notice` says how many).
        """
        if owner is not None:
            previous = self._by_owner.pop(owner, None)
            if previous is not None:
                previous.cancel()
                previous.join(timeout=30.0)
        with self._lock:
            backend = self._require_backend()
            if expect_model is not None and backend.spec.id != expect_model:  # switched while this one waited
                raise ModelNotLoadedError(f"{expect_model} was switched for {backend.spec.name} a moment ago.")
            params = params or backend.default_params()
            generation = backend.generate(messages, params, routing=routing)
            reply = Reply(generation, params, line=backend.line, stop=stop, on_wait=on_wait,
                          client=client or owner,  # no address known: each session its own share
                          stall_timeout_s=self.settings.stall_timeout_s)
            self._replies = {r for r in self._replies if not r.join(timeout=0)} | {reply}
            if owner is not None:
                self._by_owner[owner] = reply
            return reply

    @staticmethod
    def capabilities(spec: ModelSpec) -> Capabilities:
        """What the backend of `spec` can do, before it is loaded (the page asks this, never which backend it is)."""
        return capabilities_of(spec.backend)

    def served_models(self, base_url: str, api_key_env: str) -> list[str]:
        """What a model server at `base_url` serves, for the sidebar's "Add a model server" (raises MoEChatError)."""
        if not capabilities_of(SERVER_BACKEND).lists_models:
            raise ModelLoadError("No backend that talks to model servers is installed.")
        return self._loader(SERVER_BACKEND, self.settings).list_models(base_url, api_key_env)  # type: ignore[attr-defined]

    def close(self) -> None:
        """Stop every reply and free the model (a server shutting down; tests)."""
        self.unload()


_shared_lock = threading.Lock()
_shared: Engine | None = None


def shared_engine(settings: Settings) -> Engine:
    """The process's one engine. It lives outside any UI cache, so clearing caches never unloads the model;
    only Load, Switch and Unload (or new settings, in tests) change what it holds."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.settings != settings:
            if _shared is not None:
                _shared.close()
            _shared = Engine(settings)
        return _shared


def close_shared() -> None:
    """Close the process's engine (tests; a server shutting down)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.close()
            _shared = None
