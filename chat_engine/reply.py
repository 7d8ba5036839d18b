"""The one reply: a backend's generation run by a worker thread behind the model's line, its text a plain iterator.

A backend writes a `Generation` (its `pieces(stop)` generator yields text and records what only the backend knows:
token counts, why the model stopped, routing); `Reply` does everything else for every backend: the place in line,
the worker thread, iteration, cancel, the stall timeout, the finish reason, usage and timing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

from chat_engine.budget import Budget
from chat_engine.interface import FinishReason, GenerationResult, WaitCallback
from chat_engine.params import GenerationParams
from chat_engine.slots import SlotQueue
from common.errors import GenerationTimeout, MoEChatError, generation_failed
from common.routing import Routing

_END = object()


class Generation:
    """What a backend supplies for one answer. Override `pieces`; set the attributes as they become known.

    `pieces(stop)` runs in the reply's worker thread once the reply's turn in line has come; it yields text as the
    model produces it and ends soon after `stop` is set (the reply also closes it then). An exception it raises
    reaches the reader through `translate`, unless the reader stopped it first.
    """

    abandon_after_s: float | None = None  # a stopped generation still running after this is left to end on its own
    prompt_tokens: int | None = None  # the backend's own count, else the budget's
    new_tokens: int | None = None  # the backend's own count so far, else one per piece
    finish: FinishReason | None = None  # "eos" or "length" when the backend knows why the model stopped
    routing: Routing | None = None  # which experts each token used, when recorded
    note: str | None = None  # what the reader should know about how it ended (the app cut it off), if anything

    def __init__(self, budget: Budget) -> None:
        self.budget = budget  # the messages as cut to the context

    def pieces(self, stop: threading.Event) -> Iterator[str]:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Called when the reply is cancelled: wake a worker blocked on I/O (a backend that reads a socket)."""

    def translate(self, exc: BaseException) -> MoEChatError:
        """A failure of `pieces` as the domain error the reader gets."""
        return exc if isinstance(exc, MoEChatError) else generation_failed(exc)

    def stall_error(self, seconds: float) -> MoEChatError:
        """What the reader is told when no text came for `seconds`."""
        return GenerationTimeout(f"No token for {seconds:.0f} s: generation was stopped. The model may be overloaded "
                                 "or offloaded to CPU/disk; check the memory panel and try again.")


class Reply:
    """One answer being generated, for any backend: iterate it for text; `cancel()` stops it.

    It joins `line` (when the backend has one) at once, so a client over its share gets `LineFullError` here, and
    generates when its turn comes. While it waits, `on_wait` is told its place (1: next). After iteration ends,
    `result` says how it went; a failure is raised to the iterating caller as a `MoEChatError`; no text for
    `stall_timeout_s` stops it with `GenerationTimeout` instead of leaving the reader blocked.
    """

    def __init__(self, generation: Generation, params: GenerationParams, *, line: SlotQueue | None = None,
                 client: str | None = None, stop: threading.Event | None = None,
                 on_wait: WaitCallback | None = None, stall_timeout_s: float = 300.0, poll_s: float = 0.1) -> None:
        self.generation = generation
        self.budget = generation.budget
        self.params = params
        self.stop = stop or threading.Event()
        self.result: GenerationResult | None = None
        self.interruption: str | None = None  # why someone else stopped it (a model switch), for its reader
        self._line, self._client, self._on_wait = line, client, on_wait
        self._stall_timeout_s, self._poll_s = stall_timeout_s, poll_s
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._pieces = 0
        self._error: BaseException | None = None
        self._first_at: float | None = None
        self._started = self._last_activity = time.perf_counter()
        self._stopped_at: float | None = None
        self._closed = False
        if line is not None:
            line.enter(self, client)  # in line now (or LineFullError), before the worker waits in it
        self._thread = threading.Thread(target=self._work, name="moe-chat-reply", daemon=True)
        self._thread.start()

    # -- the worker thread --

    def _work(self) -> None:
        try:
            if self._line is not None and not self._line.acquire(self, self.stop, self._client):
                return  # cancelled while waiting in line: nothing was generated
            try:
                self._generate()
            finally:
                if self._line is not None:
                    self._line.release()
        finally:
            self._queue.put(_END)

    def _generate(self) -> None:
        self._started = self._last_activity = time.perf_counter()  # time in line is not generation time
        if self.stop.is_set():  # cancelled just as its turn came
            return
        pieces = self.generation.pieces(self.stop)
        try:
            for piece in pieces:
                if piece:
                    if self._first_at is None:
                        self._first_at = time.perf_counter()
                    self._pieces += 1
                    self._queue.put(piece)
                if self.stop.is_set():
                    break
        except BaseException as exc:  # re-raised in the reader's thread, unless the reader stopped it
            if not self.stop.is_set():
                self._error = exc
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()

    # -- the reader --

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while not self._closed:
            try:
                item = self._queue.get(timeout=self._poll_s)
            except queue.Empty:
                self._idle()
                continue
            if item is _END:
                self._finish()
            else:
                self._last_activity = time.perf_counter()
                return item  # type: ignore[return-value]
        raise StopIteration

    def _idle(self) -> None:
        now = time.perf_counter()
        position = self.queue_position
        if position:
            self._last_activity = now  # waiting for a slot is not a stall
            if self._on_wait is not None:
                self._on_wait(position)
            return
        abandon = self.generation.abandon_after_s
        if self.stop.is_set() and abandon is not None:
            self._stopped_at = self._stopped_at or now
            if now - self._stopped_at > abandon:
                self._finish(join=False)  # nothing to shut yet: the worker ends at its own timeout
        elif now - self._last_activity > self._stall_timeout_s:
            self.stop.set()
            self.generation.interrupt()
            self._finish(self.generation.stall_error(self._stall_timeout_s), join=False)

    def _finish(self, error: MoEChatError | None = None, join: bool = True) -> None:
        if join:
            self._thread.join()
        self._closed = True
        generation = self.generation
        failure = error or (generation.translate(self._error) if self._error is not None else None)
        reason: FinishReason
        if failure is not None:
            reason = "error"
        elif generation.finish is not None:
            reason = generation.finish
        else:
            reason = "stopped" if self.stop.is_set() else "eos"
        ttft = None if self._first_at is None else self._first_at - self._started
        prompt_tokens = generation.prompt_tokens or self.budget.prompt_tokens
        self.result = GenerationResult(reason, self.new_tokens, prompt_tokens, ttft,
                                       time.perf_counter() - self._started)
        if failure is not None:
            raise failure

    # -- what anyone may ask --

    @property
    def routing(self) -> Routing | None:
        """Which experts each token used, once iteration has stopped, when recorded."""
        return self.generation.routing if self.result is not None else None

    @property
    def queue_position(self) -> int:
        """Requests ahead of this one and it while it waits for the model (1: next); 0 once it runs."""
        return self._line.position(self) if self._line is not None else 0

    @property
    def new_tokens(self) -> int:
        """Tokens generated so far (the backend's count where it has one, else one per piece of text)."""
        counted = self.generation.new_tokens
        return counted if counted is not None else self._pieces

    @property
    def note(self) -> str | None:
        """Why it ended, when that was not the model or its reader: someone else stopped it, or the app cut it."""
        return self.interruption or self.generation.note

    def text(self) -> str:
        """Consume the rest of the answer and return it whole."""
        return "".join(self)

    def cancel(self, reason: str | None = None) -> None:
        """Stop within one token; `reason` tells the reader why, when it was not them."""
        if reason is not None and not self.stop.is_set():
            self.interruption = reason
        self.stop.set()
        self.generation.interrupt()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until it has stopped generating; True once it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()
