"""A backend added in a test, with no change anywhere else, chats through the page: a registry value and its code.

Its generation is a tiny generator (each word of the question, backwards); the engine's one reply runs it, so the
page streams it, stops it and shows how it ended as for every other backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from chat_engine.backends import register_backend
from chat_engine.budget import Budget, fit_to_context
from chat_engine.interface import BackendInfo, Capabilities
from chat_engine.params import GenerationParams
from chat_engine.reply import Generation
from chat_engine.slots import SlotQueue
from common.messages import Message
from tests.app.conftest import chat_messages, status_text


class Backwards(Generation):
    def __init__(self, budget: Budget, words: list[str]) -> None:
        super().__init__(budget)
        self.words = words

    def pieces(self, stop: threading.Event) -> Iterator[str]:
        for i, word in enumerate(self.words):
            time.sleep(0.01)
            yield (" " if i else "") + word


class BackwardsBackend:
    capabilities = Capabilities()
    context = 1000

    def __init__(self, spec) -> None:
        self.spec, self.line = spec, SlotQueue(1)

    def info(self) -> BackendInfo:
        return BackendInfo(device_summary="a list", dtype="words")

    def default_params(self) -> GenerationParams:
        return GenerationParams(max_new_tokens=50)

    def render_prompt(self, messages: Sequence[Message]) -> str:
        return "\n".join(m["content"] for m in messages)

    def budget(self, messages: Sequence[Message], max_new_tokens: int) -> Budget:
        return fit_to_context(messages, lambda ms: sum(len(m["content"].split()) for m in ms), self.context,
                              max_new_tokens)

    def generate(self, messages: Sequence[Message], params: GenerationParams, *, routing: bool = False) -> Backwards:
        budget = self.budget(messages, params.max_new_tokens)
        return Backwards(budget, budget.messages[-1]["content"].split()[::-1])

    def close(self) -> None:
        pass


class BackwardsLoader:
    def prepare(self, spec, options, *, on_stage, on_progress=None, cancel=None):
        return lambda: BackwardsBackend(spec)

    def same_load(self, backend, spec, options) -> bool:
        return backend.spec == spec


def test_a_backend_added_in_a_test_chats_through_the_page(page_for, tmp_path):
    register_backend("backwards", lambda settings: BackwardsLoader())
    (tmp_path / "words").mkdir()
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nid = "backwards"\nname = "Backwards"\nsource = "local"\n'
                      f'path = "{tmp_path / "words"}"\nbackend = "backwards"\npreload = true\n')
    page = page_for(models, MOE_CHAT_DEFAULT_MODEL="backwards")
    assert "**Backwards** ready" in status_text(page)
    assert not [s for s in page.sidebar.selectbox if s.key and s.key.startswith("opt_")]  # it declares no options
    assert page.sidebar.toggle(key="record_routing").disabled  # nor the experts view
    page.chat_input[0].set_value("the page streams this").run()
    assert chat_messages(page)[-1] == ("assistant", "this streams page the")
    stats = page.session_state["messages"][-1]["stats"]
    assert stats.finish_reason == "eos" and stats.tokens == 4  # one per piece: it counts no tokens itself
