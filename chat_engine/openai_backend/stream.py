"""The remote reply: a server's SSE stream read by a worker thread, its text handed to the caller as a plain iterator.

Stop closes the HTTP stream; a server that sees its client go away aborts the request (vLLM frees it at once).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai

from chat_engine.budget import Budget
from chat_engine.interface import FinishReason, GenerationResult, WaitCallback, WorkerControl
from chat_engine.params import GenerationParams
from common.errors import MoEChatError

_END = object()
ABANDON_AFTER_S = 1.0  # a stopped answer whose request the server has not even begun to answer is let go after this
_REASONS: dict[str, FinishReason] = {"stop": "eos", "length": "length"}


class RemoteStream(WorkerControl, Iterator[str]):
    """Text of one answer streamed by a server: the remote `Reply`.

    `translate` turns whatever the client library raised into the `MoEChatError` the reader gets. Tokens are
    the server's count (`usage`) when it sends one, else one per streamed chunk.
    """

    def __init__(self, client: openai.OpenAI, body: dict[str, Any], *, budget: Budget, params: GenerationParams,
                 translate: Callable[[BaseException], MoEChatError], stop: threading.Event | None = None,
                 on_wait: WaitCallback | None = None, slots: Any = None, client_id: str | None = None,
                 poll_s: float = 0.1) -> None:
        self.stop = stop or threading.Event()
        self.result: GenerationResult | None = None
        self.budget = budget
        self.params = params
        self.interruption: str | None = None
        self.routing = None  # a server's routers are out of sight
        self._client, self._body, self._translate = client, body, translate
        self._on_wait, self._slots, self._client_id, self._poll_s = on_wait, slots, client_id, poll_s
        self._queue: queue.Queue[Any] = queue.Queue()
        self._http_stream: Any = None
        self._chunks = 0
        self._usage: Any = None
        self._finish_reason: str | None = None
        self._error: BaseException | None = None
        self._first_at: float | None = None
        self._started = time.perf_counter()
        self._closed = False
        self._stop_seen: float | None = None
        if slots is not None:
            slots.enter(self, client_id)  # a row's own limit on answers at once; LineFullError when full
        self._thread = threading.Thread(target=self._work, name="moe-chat-remote", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        if self._slots is not None and not self._slots.acquire(self, self.stop, self._client_id):
            self._queue.put(_END)
            return
        self._started = time.perf_counter()
        try:
            if not self.stop.is_set():
                self._read()
        except BaseException as exc:  # re-raised in the reader's thread, unless the reader stopped it
            if not self.stop.is_set():
                self._error = exc
        finally:
            self._close_http()
            if self._slots is not None:
                self._slots.release()
            self._queue.put(_END)

    def _read(self) -> None:
        self._http_stream = self._client.chat.completions.create(stream=True, **self._body)
        if self.stop.is_set():  # stopped while the server prepared its answer: nothing to shut before now
            return
        for chunk in self._http_stream:
            if chunk.usage is not None:
                self._usage = chunk.usage
            for choice in chunk.choices:
                text = choice.delta.content if choice.delta is not None else None
                if text:
                    if self._first_at is None:
                        self._first_at = time.perf_counter()
                    self._chunks += 1
                    self._queue.put(text)
                if choice.finish_reason:
                    self._finish_reason = choice.finish_reason
            if self.stop.is_set():
                return

    def _close_http(self) -> None:
        stream, self._http_stream = self._http_stream, None
        if stream is not None:
            try:
                stream.close()  # the server sees its client go away and aborts the request
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is closed either way
                pass

    def cancel(self, reason: str | None = None) -> None:
        """Stop now: the connection is shut at once, so a server that has gone quiet cannot hold the stop up (the
        worker blocked reading it wakes), and the server, seeing its client go away, aborts the request."""
        super().cancel(reason)
        stream = self._http_stream
        response = getattr(stream, "response", None)
        network = response.extensions.get("network_stream") if response is not None else None
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                pass

    def __next__(self) -> str:
        while not self._closed:
            try:
                item = self._queue.get(timeout=self._poll_s)
            except queue.Empty:
                if self.stop.is_set() and self._stopped_for() > ABANDON_AFTER_S:
                    self._finish(wait=False)  # no response yet to shut: the worker ends at its own timeout
                    continue
                position = self.queue_position
                if position and self._on_wait is not None:
                    self._on_wait(position)
                continue
            if item is _END:
                self._finish()
            else:
                return item
        raise StopIteration

    def _stopped_for(self) -> float:
        if self._stop_seen is None:
            self._stop_seen = time.perf_counter()
        return time.perf_counter() - self._stop_seen

    def _finish(self, wait: bool = True) -> None:
        if wait:
            self._thread.join()
        self._closed = True
        failure = self._translate(self._error) if self._error is not None else None
        usage = self._usage
        new_tokens = usage.completion_tokens if usage is not None and usage.completion_tokens else self._chunks
        prompt_tokens = usage.prompt_tokens if usage is not None and usage.prompt_tokens else self.budget.prompt_tokens
        reason: FinishReason
        if failure is not None:
            reason = "error"
        elif self.stop.is_set() and self._finish_reason is None:
            reason = "stopped"
        else:
            reason = _REASONS.get(self._finish_reason or "stop", "eos")
        ttft = None if self._first_at is None else self._first_at - self._started
        self.result = GenerationResult(reason, new_tokens, prompt_tokens, ttft, time.perf_counter() - self._started)
        if failure is not None:
            raise failure

    @property
    def new_tokens(self) -> int:
        usage = self._usage
        return usage.completion_tokens if usage is not None and usage.completion_tokens else self._chunks
