"""A small OpenAI-compatible server for tests: real HTTP and SSE on loopback, with each way a real server fails.

It streams a fixed answer word by word, like vLLM (owned_by "vllm", max_model_len, /tokenize), and can be
told to misbehave: `server.mode` is one of "ok", "slow" (a chunk every 50 ms, for Stop), "stall" (headers,
then nothing), "die" (a few chunks, then the connection drops), "error_event" (a few chunks, then an error
event), "plain500" (a plain-text 500, as
`transformers serve` sends for an unknown model), "detail400" (FastAPI's {"detail": ...}). `server.active`
counts requests still streaming; `server.cancelled` those whose client went away.

Hostile modes, as an attacker's server would behave: "endless" (ignores max_tokens and never stops), "huge_event"
(one 50 MB event), "drip" (one byte every 0.2 s of an event that never ends), "markdown" (answers `server.answer`,
e.g. with a Markdown image). `server.listing` replaces /v1/models' body (bytes) when set; `server.sent` counts the
bytes of answers streamed.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "fake-moe"
ANSWER = "I am a fake server that answers every question the same way."
CONTEXT = 1024


def _error(status: int, message: str, kind: str = "BadRequestError") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}},
                        status_code=status)


class FakeOpenAIServer:
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.mode = "ok"
        self.report_context = True  # False: no max_model_len in /v1/models and no /tokenize, as plain servers
        self.active = 0
        self.cancelled = 0
        self.requests: list[dict] = []
        self.answer = ANSWER
        self.listing: bytes | None = None
        self.listing_status = 200
        self.sent = 0
        routes = [Route("/v1/models", self.models), Route("/tokenize", self.tokenize, methods=["POST"]),
                  Route("/v1/chat/completions", self.chat, methods=["POST"])]
        self.app = Starlette(routes=routes)
        self.port = 0

    def _refused(self, request: Request) -> JSONResponse | None:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": "Unauthorized"}, status_code=401)  # vLLM's --api-key answer
        return None

    async def models(self, request: Request):
        if self.listing is not None:
            moved = {"Location": "http://127.0.0.1:1/elsewhere"} if self.listing_status == 302 else None
            return Response(self.listing, status_code=self.listing_status, media_type="application/json",
                            headers=moved)
        entry = {"id": MODEL, "object": "model", "owned_by": "vllm"}
        if self.report_context:
            entry["max_model_len"] = CONTEXT
        return self._refused(request) or JSONResponse({"object": "list", "data": [entry]})

    @staticmethod
    def _count(messages: list[dict]) -> int:
        return sum(len(m["content"].split()) + 4 for m in messages) + 2

    async def tokenize(self, request: Request):
        if not self.report_context:
            return PlainTextResponse("Not Found", status_code=404)
        body = await request.json()
        return JSONResponse({"count": self._count(body["messages"]), "max_model_len": CONTEXT, "tokens": []})

    async def chat(self, request: Request):
        refused = self._refused(request)
        if refused:
            return refused
        body = await request.json()
        self.requests.append(body)
        if self.mode == "plain500":
            return PlainTextResponse("Internal Server Error", status_code=500)
        if self.mode == "detail400":
            return JSONResponse({"detail": f"Server is pinned to '/models/x'; requested '{body['model']}'."},
                                status_code=400)
        if body.get("model") != MODEL:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        prompt = self._count(body["messages"])
        if prompt + body.get("max_tokens", 16) > CONTEXT:
            return _error(400, f"This model's maximum context length is {CONTEXT} tokens. However, you requested "
                               f"{prompt + body.get('max_tokens', 16)} tokens. Please reduce the length.")
        return StreamingResponse(self._stream(body, prompt), media_type="text/event-stream")

    async def _hostile(self):
        if self.mode == "endless":
            i = 0
            while True:
                i += 1
                data = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
                        "choices": [{"index": 0, "delta": {"content": f" word{i}"}, "finish_reason": None}]}
                yield f"data: {json.dumps(data)}\n\n"
                if i % 50 == 0:
                    await asyncio.sleep(0)
        elif self.mode == "huge_event":
            yield 'data: {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake-moe", ' \
                  '"choices": [{"index": 0, "delta": {"content": "'
            for _ in range(50):
                yield "x" * (1 << 20)
                await asyncio.sleep(0)
            yield '"}, "finish_reason": null}]}\n\n'
        elif self.mode == "drip":
            yield "data: {"
            while True:
                await asyncio.sleep(0.2)
                yield " "

    async def _stream(self, body: dict, prompt: int):
        if self.mode in ("endless", "huge_event", "drip"):
            self.active += 1
            try:
                async for part in self._hostile():
                    self.sent += len(part)
                    yield part
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.active -= 1
            return
        words = (self.answer if self.mode == "markdown" else ANSWER).split(" ")
        if self.mode == "slow":
            words = (words * 100)[: body.get("max_tokens", 16)]
        self.active += 1
        try:
            def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
                data = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                if usage is not None:
                    data = {**data, "choices": [], "usage": usage}
                return f"data: {json.dumps(data)}\n\n"

            yield chunk({"role": "assistant", "content": ""})
            if self.mode == "stall":
                await asyncio.sleep(3600)
            for i, word in enumerate(words):
                if self.mode == "die" and i == 3:
                    raise ConnectionError("the server died")  # uvicorn drops the connection mid-body
                if self.mode == "error_event" and i == 3:  # how another MoE Chat says a switch stopped the answer
                    yield 'data: {"error": {"message": "Stopped: the model is being switched to X.", "type": ' \
                          '"server_error", "param": null, "code": "generation_failed"}}\n\n'
                    yield "data: [DONE]\n\n"
                    return
                if self.mode == "slow":
                    await asyncio.sleep(0.05)
                yield chunk({"content": word if i == 0 else " " + word})
            yield chunk({}, "stop")
            yield chunk({}, usage={"prompt_tokens": prompt, "completion_tokens": len(words),
                                   "total_tokens": prompt + len(words)})
            yield "data: [DONE]\n\n"
        except asyncio.CancelledError:
            self.cancelled += 1  # the client went away: a real server aborts the request here
            raise
        finally:
            self.active -= 1

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@contextmanager
def running_fake(api_key: str | None = None) -> Iterator[FakeOpenAIServer]:
    """Serve a `FakeOpenAIServer` on a free loopback port for the duration of the block."""
    fake = FakeOpenAIServer(api_key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    fake.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(fake.app, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port whose listen queue is full, so a new connection times out (a host dropping packets)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.2)
    try:
        yield port
    finally:
        for s in [*fillers, listener]:
            s.close()


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port
