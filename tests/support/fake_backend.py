"""A backend that implements the engine's protocols with scripted replies, so that page tests test the page.

Rows with `backend = "fake"` load it (after `install`). Each word of an answer is one token and one chunk. What it
answers and how comes from `SCRIPT`, which a test sets (the page runs in the test's process): the answer when a reply
starts, the delays, failures and gate while it generates, the number of slots when the backend loads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chat_engine.backends import register_backend
from chat_engine.budget import Budget, fit_to_context
from chat_engine.interface import Backend, BackendInfo, GenerationResult, LoadStage, WaitCallback, WorkerControl
from chat_engine.params import GenerationParams
from chat_engine.slots import SlotQueue
from common.errors import GenerationError
from common.messages import Message

CONTEXT = 4096  # tokens (words) the fake model takes


@dataclass
class FakeScript:
    """How the fake answers (see the module docstring for when each field is read)."""

    answers: dict[str, str] = field(default_factory=dict)  # last user message -> answer; else "You said: ..."
    chunk_delay_s: float = 0.0  # between words
    fail_after: int | None = None  # raise a GenerationError after this many words
    failure: str = "The fake model broke on purpose. The conversation is kept; try again."
    gate: threading.Event | None = None  # when given, each reply holds its slot until the gate is set
    on_chunk: Callable[[int], None] | None = None  # called by the worker after each word, with its index
    slots: int = 1

    def answer_to(self, messages: Sequence[Message]) -> str:
        last = messages[-1]["content"]
        return self.answers.get(last, f"You said: {last}")


SCRIPT = FakeScript()
LOADED: list[FakeBackend] = []  # every fake backend loaded, newest last: a test can queue requests on it directly


def words(text: str) -> list[str]:
    """The answer's chunks: each word with the space before it."""
    return [(" " if i else "") + w for i, w in enumerate(text.split(" "))]


class FakeReply(WorkerControl):
    """One scripted answer, produced by a worker thread behind the backend's queue, as a real reply is."""

    def __init__(self, chunks: list[str], script: FakeScript, budget: Budget, params: GenerationParams,
                 slots: SlotQueue, stop: threading.Event | None, on_wait: WaitCallback | None,
                 client: str | None = None) -> None:
        self.budget, self.params = budget, params
        self.result: GenerationResult | None = None
        self.interruption: str | None = None
        self.routing = None  # the fake has no routers
        self.stop = stop or threading.Event()
        self._chunks = chunks[: params.max_new_tokens]
        self._length = len(chunks) > params.max_new_tokens
        self._script, self._slots, self._on_wait, self._client = script, slots, on_wait, client
        self._out: list[str] = []
        self._sent = 0
        self._error: str | None = None
        self._done = threading.Event()
        self._started = time.perf_counter()
        self._first: float | None = None
        slots.enter(self, client)
        self._thread = threading.Thread(target=self._work, name="fake-generate", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        if not self._slots.acquire(self, self.stop, self._client):
            self._done.set()
            return
        try:
            gate = self._script.gate
            while gate is not None and not gate.wait(0.02) and not self.stop.is_set():
                pass
            for i, chunk in enumerate(self._chunks):
                if self.stop.is_set():
                    break
                if self._script.fail_after is not None and i >= self._script.fail_after:
                    self._error = self._script.failure
                    break
                time.sleep(self._script.chunk_delay_s)
                self._first = self._first or time.perf_counter()
                self._out.append(chunk)
                if self._script.on_chunk is not None:
                    self._script.on_chunk(i)
        finally:
            self._slots.release()
            self._done.set()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while True:
            if self._sent < len(self._out):
                self._sent += 1
                return self._out[self._sent - 1]
            if self._done.is_set() and self._sent == len(self._out):
                self._finish()
            place = self.queue_position
            if place and self._on_wait is not None:
                self._on_wait(place)
            time.sleep(0.01)

    def _finish(self) -> None:
        if self._error is not None:
            reason = "error"
        elif self.stop.is_set() and len(self._out) < len(self._chunks):
            reason = "stopped"
        else:
            reason = "length" if self._length else "eos"
        first = None if self._first is None else self._first - self._started
        self.result = GenerationResult(reason, len(self._out), self.budget.prompt_tokens, first,
                                       time.perf_counter() - self._started)
        if self._error is not None:
            raise GenerationError(self._error)
        raise StopIteration

    @property
    def queue_position(self) -> int:
        return self._slots.position(self)

    @property
    def new_tokens(self) -> int:
        return len(self._out)



def count_words(messages: Sequence[Message]) -> int:
    return sum(len(m["content"].split()) + 1 for m in messages)


class FakeBackend:
    """The `Backend` protocol with no model behind it."""

    def __init__(self, spec, script: FakeScript) -> None:
        self.spec = spec
        self.context = CONTEXT
        self._script = script
        self._slots = SlotQueue(script.slots)
        self.closed = False

    def info(self) -> BackendInfo:
        return BackendInfo(device_summary="nowhere", dtype="words", kernels="script", load_seconds=0.0)

    def default_params(self) -> GenerationParams:
        return GenerationParams(max_new_tokens=64)

    def render_prompt(self, messages: Sequence[Message]) -> str:
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    def budget(self, messages: Sequence[Message], max_new_tokens: int) -> Budget:
        return fit_to_context(messages, count_words, CONTEXT, max_new_tokens)

    def start_reply(self, messages: Sequence[Message], params: GenerationParams, *,
                    stop: threading.Event | None = None, on_wait: WaitCallback | None = None,
                    client: str | None = None, routing: bool = False) -> FakeReply:
        budget = self.budget(messages, params.max_new_tokens)
        chunks = words(self._script.answer_to(budget.messages))
        return FakeReply(chunks, self._script, budget, params, self._slots, stop, on_wait, client)

    @property
    def waiting(self) -> int:
        """Requests waiting in this backend's line."""
        return self._slots.waiting

    def close(self) -> None:
        self.closed = True


class FakeLoader:
    """Loads rows with `backend = "fake"` at once."""

    def __init__(self, script: FakeScript) -> None:
        self.script = script

    def prepare(self, spec, options, *, on_stage: Callable[[LoadStage], None], on_progress=None,
                cancel=None) -> Callable[[], Backend]:
        on_stage(LoadStage("checking", f"Checking {spec.name}..."))

        def load() -> Backend:
            LOADED.append(FakeBackend(spec, self.script))
            return LOADED[-1]

        return load

    def same_load(self, backend: Backend, spec, options) -> bool:
        return backend.spec == spec


def install(folder: Path) -> Path:
    """Register the fake backend and write a models.toml with its row (the default model, preloaded)."""
    register_backend("fake", lambda settings: FakeLoader(SCRIPT))
    (folder / "fake-model").mkdir(parents=True, exist_ok=True)
    models = folder / "models.toml"
    models.write_text('[[models]]\nid = "fake"\nname = "Fake MoE"\nsource = "local"\n'
                      f'path = "{folder / "fake-model"}"\nbackend = "fake"\npreload = true\nkind = "chat"\n')
    return models
