"""The in-process reply: `generate` in a worker thread, its text handed to the caller as a plain iterator."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from chat_engine.budget import Budget
from chat_engine.interface import FinishReason, GenerationResult, WaitCallback, WorkerControl
from chat_engine.params import GenerationParams
from common.errors import GenerationError, GenerationTimeout, MoEChatError

if TYPE_CHECKING:
    from chat_engine.transformers_backend.routing import RoutingTrace
    from common.routing import Routing

HAND_OVER_S = 0.02  # the worker hands text to the reader at most 50 times a second (the first token at once)


def _make_streamer(tokenizer: Any, poll_s: float, batch_s: float):
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
            super().__init__(tokenizer, skip_prompt=True, timeout=poll_s, skip_special_tokens=True)
            self.ids: list[int] = []
            self.prefix = 0
            self.read = 0
            self.new_tokens = 0
            self.first_token_at: float | None = None
            self.handed_over_at: float | None = None
            self.on_hand_over: Any = None  # called in the generating thread after each hand-over (routing copies)

        def put(self, value: Any) -> None:
            if self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            now = time.perf_counter()
            self.new_tokens += int(value.numel())
            if self.first_token_at is None:
                self.first_token_at = now
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
    return GenerationError(f"Generation failed ({type(exc).__name__}: {exc}). The conversation is kept; "
                           "try again, and reload the model if it keeps failing.")


class ChatStream(WorkerControl, Iterator[str]):
    """Text of one reply as it is generated: the in-process `Reply`. Iterate it; `cancel()` stops it within one token.

    After iteration ends, `result` says why it ended. An exception in the worker is re-raised to the
    iterating caller as a `GenerationError`; a worker that produces no token for `stall_timeout_s`
    raises `GenerationTimeout` instead of leaving the caller blocked.
    """

    def __init__(self, model: Any, tokenizer: Any, inputs: dict[str, Any], generation_config: Any,
                 *, budget: Budget, params: GenerationParams, stop: threading.Event | None = None,
                 on_wait: WaitCallback | None = None, stall_timeout_s: float = 300.0, poll_s: float = 0.1,
                 slots: Any = None, client: str | None = None, record_routing: bool = False) -> None:
        self.stop = stop or threading.Event()
        self.result: GenerationResult | None = None
        self.budget = budget  # the context budget the prompt was cut to
        self.params = params  # the GenerationParams it runs with
        self.interruption: str | None = None  # why someone else stopped it (a model switch), for its reader
        self.routing: Routing | None = None  # which experts each token used, when recorded (storable form)
        self.routing_trace: RoutingTrace | None = None  # the same as tensors, for tests and tools
        self._record_routing = record_routing
        self._on_wait = on_wait  # told the queue position while waiting for a slot
        self._slots = slots  # a SlotQueue shared by every generation on the model, or None
        self._client = client  # whom the line is fair between
        self._stall_timeout_s = stall_timeout_s
        self._poll_s = poll_s
        self._streamer = _make_streamer(tokenizer, poll_s, HAND_OVER_S)
        self._error: BaseException | None = None
        self._last_token: int | None = None
        self._prompt_tokens = int(inputs["input_ids"].shape[1])
        self._max_new_tokens = generation_config.max_new_tokens
        eos = generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        self._started = time.perf_counter()
        self._last_activity = self._started
        self._closed = False
        kwargs = dict(inputs, generation_config=generation_config, streamer=self._streamer,
                      stopping_criteria=_stop_criteria(self.stop))
        if slots is not None:
            slots.enter(self, client)  # in line at once (or LineFullError), before the worker waits in it
        self._thread = threading.Thread(target=self._work, args=(model, kwargs), name="moe-chat-generate",
                                        daemon=True)
        self._thread.start()

    def _work(self, model: Any, kwargs: dict[str, Any]) -> None:
        import torch

        if self._slots is not None and not self._slots.acquire(self, self.stop, self._client):
            self._streamer.end()  # cancelled while waiting in the queue: nothing was generated
            return
        self._started = self._last_activity = time.perf_counter()  # time in the queue is not generation time
        try:
            if self.stop.is_set():  # cancelled just as its turn came
                self._streamer.end()
                return
            recorder = None
            if self._record_routing:
                from chat_engine.transformers_backend.routing import RoutingRecorder, compact, shared_experts
  # hooks only for this generation, in this thread; none at all otherwise
                recorder = RoutingRecorder(model, self._prompt_tokens + self._max_new_tokens)
                self._streamer.on_hand_over = recorder.pull
            try:
                with torch.inference_mode():
                    if self.params.seed is not None:  # seeded when its turn comes, not while others generate
                        torch.manual_seed(self.params.seed)
                    out = model.generate(**kwargs)  # [1, prompt + new tokens]
            finally:
                if recorder is not None:
                    recorder.close()
                    self.routing_trace = recorder.trace(self._prompt_tokens)
            self._last_token = int(out[0, -1])
            if recorder is not None:
                self.routing = compact(self.routing_trace, out[0].tolist(), self._streamer.tokenizer,
                                       shared_experts(model.config))
        except BaseException as exc:  # re-raised in the consumer's thread
            self._error = exc
            self._streamer.end()
        finally:
            if self._slots is not None:
                self._slots.release()

    def __next__(self) -> str:
        while not self._closed:
            try:
                text = self._streamer.text_queue.get(timeout=self._poll_s)
            except queue.Empty:
                position = self.queue_position
                if position:
                    self._last_activity = time.perf_counter()  # waiting for a slot is not a stall
                    if self._on_wait is not None:
                        self._on_wait(position)
                    continue
                if not self._thread.is_alive() and self._streamer.text_queue.empty():
                    self._finish()  # the worker died without ending the stream
                elif time.perf_counter() - self._last_activity > self._stall_timeout_s:
                    self.stop.set()
                    self._finish(GenerationTimeout(
                        f"No token for {self._stall_timeout_s:.0f} s: generation was stopped. The model may be "
                        "overloaded or offloaded to CPU/disk; check the memory panel and try again."))
                continue
            if text is self._streamer.stop_signal:
                self._finish()
            elif text:
                self._last_activity = time.perf_counter()
                return text
        raise StopIteration

    def _finish(self, error: MoEChatError | None = None) -> None:
        if error is None:  # a stalled worker is left to end on its own: it has been told to stop
            self._thread.join()
        self._closed = True
        failure = error or (translate_error(self._error) if self._error is not None else None)
        streamer = self._streamer
        reason: FinishReason
        if failure is not None:
            reason = "error"
        elif self._last_token in self._eos_ids:
            reason = "eos"
        elif streamer.new_tokens >= self._max_new_tokens:
            reason = "length"
        else:
            reason = "stopped" if self.stop.is_set() else "eos"
        ttft = None if streamer.first_token_at is None else streamer.first_token_at - self._started
        self.result = GenerationResult(reason, streamer.new_tokens, self._prompt_tokens, ttft,
                                       time.perf_counter() - self._started)
        if failure is not None:
            raise failure

    @property
    def new_tokens(self) -> int:
        """Tokens generated so far."""
        return self._streamer.new_tokens
