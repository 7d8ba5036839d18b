"""The engine seam: what the page (or an HTTP API) asks of whoever generates, and the values it gets back.

A backend is a loaded model that answers chats: the in-process transformers one (`chat_engine.transformers_backend`)
today, a remote OpenAI-compatible server or a test fake beside it. The page sees only these protocols and values.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from chat_engine.budget import Budget
from chat_engine.params import GenerationParams
from common.messages import Message
from common.routing import Routing

if TYPE_CHECKING:
    from chat_engine.reply import Generation
    from chat_engine.slots import SlotQueue
    from model_loader.download import DownloadProgress
    from model_loader.placement import LoadOptions
    from model_loader.registry import ModelSpec

FinishReason = Literal["eos", "length", "stopped", "error"]
State = Literal["empty", "loading", "ready", "error"]
StageName = Literal["preparing", "downloading", "checking", "loading", "done", "failed", "cancelled"]
WaitCallback = Callable[[int], None]  # told the reply's place in line (1: next) while it waits for the model


@dataclass(frozen=True)
class GenerationResult:
    """How a finished reply went; shown under the answer."""

    finish_reason: FinishReason
    new_tokens: int
    prompt_tokens: int
    time_to_first_token_s: float | None
    elapsed_s: float

    @property
    def tokens_per_s(self) -> float | None:
        if self.time_to_first_token_s is None or self.new_tokens < 2:
            return None
        decode_s = self.elapsed_s - self.time_to_first_token_s
        return (self.new_tokens - 1) / decode_s if decode_s > 0 else None


class Reply(Protocol):
    """One answer being generated. Iterate it for text; everything else about it is set by the backend that built it.

    `budget` is the context budget the prompt was cut to, `params` what it generates with, `result` how it ended
    (set once iteration stops), `interruption` why someone else stopped it (a model switch), for its reader,
    `routing` the experts each token used (set once iteration stops, when recorded).
    A failure is raised to the iterating caller as a `MoEChatError`.
    """

    budget: Budget
    params: GenerationParams
    result: GenerationResult | None
    interruption: str | None
    routing: Routing | None  # which experts each token used, when asked for and the backend can see its routers

    def __iter__(self) -> Iterator[str]: ...

    def __next__(self) -> str: ...

    @property
    def queue_position(self) -> int:
        """Requests ahead of this one and it while it waits for the model (1: next); 0 once it runs."""
        ...

    @property
    def new_tokens(self) -> int:
        """Tokens generated so far."""
        ...

    def cancel(self, reason: str | None = None) -> None:
        """Stop within one token; `reason` tells the reader why, when it was not them."""
        ...

    def join(self, timeout: float | None = None) -> bool:
        """Wait until it has stopped generating; True once it has."""
        ...


@dataclass(frozen=True)
class Capabilities:
    """What a kind of backend can do: the page asks these questions, never which backend it is."""

    load_options: bool = False  # placement, dtype, attention and expert kernels are chosen here, before a load
    experts_view: bool = False  # records which experts each token used
    weights_elsewhere: bool = False  # a server holds the weights: one connects to it; this machine's memory is not it
    lists_models: bool = False  # can ask an address which models it serves (the sidebar's "Add a model server")
    exact_counts: bool = True  # token counts are the model's own, not estimated
    quantization: bool = False  # can load 4-bit or 8-bit weights


@dataclass(frozen=True)
class BackendInfo:
    """What the status line says about a loaded backend."""

    device_summary: str = ""
    dtype: str = ""
    kernels: str = ""
    load_seconds: float | None = None
    warnings: tuple[str, ...] = ()
    server: str = ""  # the address of the server that holds the weights; empty when this process holds them


class Backend(Protocol):
    """A loaded model that answers chats. The engine holds at most one; it is closed before the next is loaded."""

    spec: ModelSpec
    capabilities: Capabilities  # what this load can do (its loader's, narrowed by what connecting found)
    context: int  # tokens of prompt and answer together that the model (or its server) takes
    line: SlotQueue | None  # where answers wait for the model, fairly between clients; None: all run at once

    def info(self) -> BackendInfo: ...

    def default_params(self) -> GenerationParams:
        """The model's own generation defaults, as the sidebar starts from."""
        ...

    def render_prompt(self, messages: Sequence[Message]) -> str:
        """The exact text the model sees for `messages`."""
        ...

    def budget(self, messages: Sequence[Message], max_new_tokens: int) -> Budget:
        """Which messages fit the context with room for the answer (raises ContextOverflowError)."""
        ...

    def generate(self, messages: Sequence[Message], params: GenerationParams, *, routing: bool = False) -> Generation:
        """What answering `messages` takes, ready to run when the reply's turn comes (the engine's `Reply` runs it).
        With `routing`, a backend that can see its model's routers records which experts each token used."""
        ...

    def close(self) -> None:
        """Free what the backend holds (weights, connections)."""
        ...


@dataclass(frozen=True)
class LoadStage:
    """Where a load is: a stage name the page can act on, and a sentence for the user."""

    name: StageName
    message: str


class BackendLoader(Protocol):
    """How one kind of backend comes to be, in two steps, so that the current model serves until the swap."""

    def prepare(self, spec: ModelSpec, options: LoadOptions | None, *, on_stage: Callable[[LoadStage], None],
                on_progress: Callable[[DownloadProgress], None] | None,
                cancel: threading.Event | None) -> Callable[[], Backend]:
        """Fetch and check what the load needs while the current model still answers; return the loading step.

        Raises a `MoEChatError` with advice when the files are missing or damaged. The engine then frees the
        current backend and calls the returned function, which loads the new one (or raises `MoEChatError`).
        """
        ...

    def same_load(self, backend: Backend, spec: ModelSpec, options: LoadOptions | None) -> bool:
        """True when `backend` already is what loading `spec` with `options` would give (a no-op load)."""
        ...

    # The loader of a kind registered with `lists_models` also has `list_models(base_url, api_key_env) -> list[str]`:
    # the models a server at that address serves (raises MoEChatError saying why it could not be asked).


@dataclass(frozen=True)
class EngineStatus:
    """What the sidebar shows about the model."""

    state: State
    model_id: str | None = None
    model_name: str | None = None
    message: str = ""
    info: BackendInfo = BackendInfo()
    capabilities: Capabilities = Capabilities()  # of the loaded backend


@dataclass(frozen=True)
class LoadJob:
    """A load running in the background, outside any page run, so a refresh neither restarts nor duplicates it."""

    model_id: str
    model_name: str
    stage: StageName
    message: str = ""
    progress: DownloadProgress | None = None

    @property
    def running(self) -> bool:
        return self.stage in ("preparing", "downloading", "checking", "loading")
