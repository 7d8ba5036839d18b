"""The in-process generation: `generate` in a thread feeding a streamer, its text the pieces the reply hands on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from chat_engine.budget import Budget
from chat_engine.reply import Generation
from common.errors import GenerationError, MoEChatError, generation_failed

if TYPE_CHECKING:
    from chat_engine.transformers_backend.routing import RoutingTrace

HAND_OVER_S = 0.02  # the worker hands text to the reader at most 50 times a second (the first token at once)


def _make_streamer(tokenizer: Any, batch_s: float):
    from transformers import TextIteratorStreamer

    class IncrementalStreamer(TextIteratorStreamer):
        """Hands text over at most once per `batch_s`, decoding only the tokens since the last hand-over.

        The base class re-decodes every token since the last newline on each step (quadratic in a long
        paragraph) and wakes the consumer thread for every token: on a busy core that alone cost 13% of the
        decode speed (bench/bench_streaming.py). Here the first token is handed over at once, later ones in
        batches; the text is that of `ids[prefix:]` minus that of `ids[prefix:read]` (the offsets technique of
        serving engines, right for tokenizers that drop a leading space when decoding a slice), and a batch that
        would end inside a multi-byte character waits for the next token. This batches the hand-over between two
        threads; how often the page redraws is the page's one throttle (components/throttle.py).
        """

        def __init__(self) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.ids: list[int] = []
            self.prefix = 0
            self.read = 0
            self.new_tokens = 0
            self.handed_over_at: float | None = None
            self.on_hand_over: Any = None  # called in the generating thread after each hand-over (routing copies)

        def put(self, value: Any) -> None:
            if self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            now = time.perf_counter()
            self.new_tokens += int(value.numel())
            self.ids.extend(value.reshape(-1).tolist())
            if self.handed_over_at is None or now - self.handed_over_at >= batch_s:
                text = self._decode_new(final=False)
                if text:
                    self.handed_over_at = now
                    self.on_finalized_text(text)
                    if self.on_hand_over is not None:
                        self.on_hand_over()

        def _decode_new(self, final: bool) -> str:
            decode = self.tokenizer.decode
            before = decode(self.ids[self.prefix:self.read], **self.decode_kwargs)
            after = decode(self.ids[self.prefix:], **self.decode_kwargs)
            if not final and (len(after) <= len(before) or after.endswith("\ufffd")):
                return ""
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]

        def end(self) -> None:
            tail = self._decode_new(final=True) if self.read < len(self.ids) else ""
            self.next_tokens_are_prompt = True
            self.on_finalized_text(tail, stream_end=True)

    return IncrementalStreamer()


def _stop_criteria(stop: threading.Event):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class EventStop(StoppingCriteria):
        """Ends generation at the next token once `stop` is set."""

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.BoolTensor:
            # [batch] of one flag per sequence
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([EventStop()])


def translate_error(exc: BaseException) -> MoEChatError:
    """Library exceptions become one domain error with advice, translated here and only here."""
    if isinstance(exc, MoEChatError):
        return exc
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        from model_loader.memory import free_cached_memory

        free_cached_memory()
        return GenerationError("Out of GPU memory while generating. The conversation is kept: lower "
                               "'max new tokens', start a new chat with less history, or load the model "
                               "with more GPUs or 8-bit/4-bit weights.")
    return generation_failed(exc)


class InProcessGeneration(Generation):
    """`generate` for one prompt: run in a thread of its own feeding the streamer, whose text `pieces` yields.

    `routing_trace` (the experts as tensors, for tests and tools) and `ids` (the generated token ids) are kept
    once it has ended.
    """

    def __init__(self, model: Any, tokenizer: Any, inputs: dict[str, Any], generation_config: Any, *,
                 budget: Budget, seed: int | None = None, record_routing: bool = False) -> None:
        super().__init__(budget)
        self.prompt_tokens = int(inputs["input_ids"].shape[1])  # [1, prompt]
        self.routing_trace: RoutingTrace | None = None
        self._model, self._inputs, self._config = model, inputs, generation_config
        self._seed, self._record_routing = seed, record_routing
        self._streamer = _make_streamer(tokenizer, HAND_OVER_S)
        eos = generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])

    @property
    def new_tokens(self) -> int:  # type: ignore[override]
        return self._streamer.new_tokens

    @property
    def ids(self) -> list[int]:
        return self._streamer.ids

    def translate(self, exc: BaseException) -> MoEChatError:
        return translate_error(exc)

    def pieces(self, stop: threading.Event) -> Iterator[str]:
        failure: list[BaseException] = []
        last_token: list[int] = []
        worker = threading.Thread(target=self._run, args=(stop, failure, last_token), name="moe-chat-generate",
                                  daemon=True)
        worker.start()
        try:
            yield from self._streamer
        finally:
            worker.join()  # within one token once stopped: the weights stay in use until it has ended
        if failure:
            raise failure[0]
        if last_token and last_token[0] in self._eos_ids:
            self.finish = "eos"
        elif self._streamer.new_tokens >= self._config.max_new_tokens:
            self.finish = "length"

    def _run(self, stop: threading.Event, failure: list[BaseException], last_token: list[int]) -> None:
        import torch

        model, streamer = self._model, self._streamer
        try:
            recorder = None
            if self._record_routing:  # hooks only for this generation, in this thread; none at all otherwise
                from chat_engine.transformers_backend.routing import RoutingRecorder

                recorder = RoutingRecorder(model, self.prompt_tokens + self._config.max_new_tokens)
                streamer.on_hand_over = recorder.pull
            try:
                with torch.inference_mode():
                    if self._seed is not None:  # seeded when its turn comes, not while others generate
                        torch.manual_seed(self._seed)
                    out = model.generate(**self._inputs, generation_config=self._config, streamer=streamer,
                                         stopping_criteria=_stop_criteria(stop))  # [1, prompt + new tokens]
            finally:
                if recorder is not None:
                    recorder.close()
                    self.routing_trace = recorder.trace(self.prompt_tokens)
            last_token.append(int(out[0, -1]))
            if recorder is not None:
                from chat_engine.transformers_backend.routing import compact, shared_experts

                self.routing = compact(self.routing_trace, out[0].tolist(), streamer.tokenizer,
                                       shared_experts(model.config))
        except BaseException as exc:  # raised again by `pieces`, in the reply's worker
            failure.append(exc)
            streamer.end()
