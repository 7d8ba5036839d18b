"""The remote generation: a server's SSE stream read through the official client, its text the reply's pieces.

Stop closes the HTTP stream; a server that sees its client go away aborts the request (vLLM frees it at once).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import openai

from chat_engine.budget import MAX_CHARS_PER_TOKEN, Budget
from chat_engine.interface import FinishReason
from chat_engine.openai_backend.server import server_stalled
from chat_engine.reply import Generation
from common.errors import MoEChatError

_REASONS: dict[str, FinishReason] = {"stop": "eos", "length": "length"}
SLACK_PIECES = 2  # a server may send a piece or two more than tokens (a stop string's tail, say)


class RemoteGeneration(Generation):
    """One answer streamed by a server. Tokens are the server's count (`usage`) when it sends one, else one per
    streamed chunk; `translate` turns whatever the client library raised into the reader's `MoEChatError`."""

    abandon_after_s = 1.0  # a stopped answer whose request the server has not even begun to answer is let go

    def __init__(self, client: openai.OpenAI, body: dict[str, Any], *, budget: Budget, where: str,
                 translate: Callable[[BaseException], MoEChatError]) -> None:
        super().__init__(budget)
        self._client, self._body, self._where, self._translate = client, body, where, translate
        self._http_stream: Any = None

    def translate(self, exc: BaseException) -> MoEChatError:
        return self._translate(exc)

    def stall_error(self, seconds: float) -> MoEChatError:
        return server_stalled(self._where, seconds)

    def pieces(self, stop: threading.Event) -> Iterator[str]:
        limit = int(self._body.get("max_tokens") or 0)
        pieces = chars = 0
        try:
            self._http_stream = self._client.chat.completions.create(stream=True, **self._body)
            if stop.is_set():  # stopped while the server prepared its answer: nothing to shut before now
                return
            for chunk in self._http_stream:
                usage = chunk.usage
                if usage is not None:
                    self.prompt_tokens = usage.prompt_tokens or None
                    self.new_tokens = usage.completion_tokens or None
                for choice in chunk.choices:
                    text = choice.delta.content if choice.delta is not None else None
                    if text:
                        pieces, chars = pieces + 1, chars + len(text)
                        if limit and self._over(limit, pieces, chars):
                            return
                        yield text
                    if choice.finish_reason:
                        self.finish = _REASONS.get(choice.finish_reason, "eos")
                if stop.is_set():
                    return
        finally:
            self._close_http()

    def _over(self, limit: int, pieces: int, chars: int) -> bool:
        """The app's own limit on an answer, whatever the server does with max_tokens: a server streams at most one
        piece of text per token, and no token is longer than MAX_CHARS_PER_TOKEN characters."""
        counted = max(pieces - SLACK_PIECES, self.new_tokens or 0)
        if counted <= limit and chars <= limit * MAX_CHARS_PER_TOKEN:
            return False
        self.finish = "length"
        self.new_tokens = min(counted, limit)
        self.note = (f"cut off by this app at {limit:,} tokens: the server went on past the max_tokens it was sent")
        return True

    def _close_http(self) -> None:
        stream, self._http_stream = self._http_stream, None
        if stream is not None:
            try:
                stream.close()  # the server sees its client go away and aborts the request
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is closed either way
                pass

    def interrupt(self) -> None:
        """Shut the connection at once, so a server that has gone quiet cannot hold the stop up (the worker blocked
        reading it wakes), and the server, seeing its client go away, aborts the request."""
        response = getattr(self._http_stream, "response", None)
        network = response.extensions.get("network_stream") if response is not None else None
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                pass
