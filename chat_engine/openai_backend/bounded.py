"""What the app reads from a model server is bounded by the app: no line (one SSE event, or a whole JSON answer)
over `MAX_LINE_BYTES`, no response over `MAX_RESPONSE_BYTES`, and nothing compressed (a small compressed reply can
unpack to gigabytes). A server that sends more is cut off with `ResponseTooLarge`, whatever it claims to be."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2

from common.errors import GenerationError

MAX_LINE_BYTES = 1 << 20  # one streamed event of a real server is a few hundred bytes
MAX_RESPONSE_BYTES = 64 << 20  # a 32k-token answer streams in about 7 MB of events


class ResponseTooLarge(GenerationError):
    """A server sent more than the app reads."""


class BoundedStream(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, where: str, line_limit: int, total_limit: int) -> None:
        self._inner, self._where = inner, where
        self._line_limit, self._total_limit = line_limit, total_limit

    def __iter__(self) -> Iterator[bytes]:
        total = line = 0
        for chunk in self._inner:
            total += len(chunk)
            cut = chunk.rfind(b"\n")
            line = line + len(chunk) if cut < 0 else len(chunk) - cut - 1
            if line > self._line_limit:
                raise ResponseTooLarge(f"The server at {self._where} sent a single event of over "
                                       f"{self._line_limit >> 20} MiB, so it was cut off: no real answer needs one. "
                                       "What arrived before it is kept.")
            if total > self._total_limit:
                raise ResponseTooLarge(f"The server at {self._where} sent over {self._total_limit >> 20} MiB in one "
                                       "response, so it was cut off.")
            yield chunk

    def close(self) -> None:
        self._inner.close()


class BoundedTransport(httpx2.HTTPTransport):
    """The HTTP transport every connection to a model server uses (`make_http`)."""

    def __init__(self, *args, line_limit: int = MAX_LINE_BYTES, total_limit: int = MAX_RESPONSE_BYTES,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._line_limit, self._total_limit = line_limit, total_limit

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        where = f"{request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}"
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            response.close()
            raise ResponseTooLarge(f"The server at {where} sent a compressed response ({encoding[:40]}) though the app "
                                   "asked for none; it is not read.")
        response.stream = BoundedStream(response.stream, where, self._line_limit, self._total_limit)
        return response
