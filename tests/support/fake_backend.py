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
from chat_engine.interface import Backend, BackendInfo, Capabilities, LoadStage
from chat_engine.params import GenerationParams
from chat_engine.reply import Generation
from chat_engine.slots import SlotQueue
from common.errors import GenerationError
from common.messages import Message

CONTEXT = 4096  # tokens (words) the fake model takes
CAPABILITIES = Capabilities(load_options=True)  # it stands in for a model loaded here, whose options the page shows


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


class FakeGeneration(Generation):
    """One scripted answer, a word at a time, run by the engine's reply as every backend's generation is."""

    def __init__(self, chunks: list[str], script: FakeScript, budget: Budget, max_new_tokens: int) -> None:
        super().__init__(budget)
        self.chunks, self.script, self.max_new_tokens = chunks, script, max_new_tokens

    def pieces(self, stop: threading.Event) -> Iterator[str]:
        gate = self.script.gate
        while gate is not None and not gate.wait(0.02) and not stop.is_set():
            pass
        for i, chunk in enumerate(self.chunks[: self.max_new_tokens]):
            if stop.is_set():
                return
            if self.script.fail_after is not None and i >= self.script.fail_after:
                raise GenerationError(self.script.failure)
            time.sleep(self.script.chunk_delay_s)
            yield chunk
            if self.script.on_chunk is not None:
                self.script.on_chunk(i)
        self.finish = "length" if len(self.chunks) > self.max_new_tokens else "eos"


def count_words(messages: Sequence[Message]) -> int:
    return sum(len(m["content"].split()) + 1 for m in messages)


class FakeBackend:
    """The `Backend` protocol with no model behind it."""

    capabilities = CAPABILITIES

    def __init__(self, spec, script: FakeScript) -> None:
        self.spec = spec
        self.context = CONTEXT
        self._script = script
        self.line = SlotQueue(script.slots)
        self.closed = False

    def info(self) -> BackendInfo:
        return BackendInfo(device_summary="nowhere", dtype="words", kernels="script", load_seconds=0.0)

    def default_params(self) -> GenerationParams:
        return GenerationParams(max_new_tokens=64)

    def render_prompt(self, messages: Sequence[Message]) -> str:
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    def budget(self, messages: Sequence[Message], max_new_tokens: int) -> Budget:
        return fit_to_context(messages, count_words, CONTEXT, max_new_tokens)

    def generate(self, messages: Sequence[Message], params: GenerationParams, *,
                 routing: bool = False) -> FakeGeneration:
        budget = self.budget(messages, params.max_new_tokens)
        return FakeGeneration(words(self._script.answer_to(budget.messages)), self._script, budget,
                              params.max_new_tokens)

    @property
    def waiting(self) -> int:
        """Requests waiting in this backend's line."""
        return self.line.waiting

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
    register_backend("fake", lambda settings: FakeLoader(SCRIPT), CAPABILITIES)
    (folder / "fake-model").mkdir(parents=True, exist_ok=True)
    models = folder / "models.toml"
    models.write_text('[[models]]\nid = "fake"\nname = "Fake MoE"\nsource = "local"\n'
                      f'path = "{folder / "fake-model"}"\nbackend = "fake"\npreload = true\nkind = "chat"\n')
    return models
