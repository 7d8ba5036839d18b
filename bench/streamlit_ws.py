"""A headless Streamlit browser session: the page's own websocket protocol, without a browser to render it.

The server cannot tell it from a browser tab: it connects to /_stcore/stream, asks for script runs with
widget values as the frontend does (protobuf BackMsg), and rebuilds the page from the deltas it is sent
(protobuf ForwardMsg). One such session costs the server exactly what a tab costs, and the client
almost nothing, so many users fit on a small machine. Loopback only.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.Common_pb2 import ChatInputValue
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates
from websockets.asyncio.client import connect

MAIN = 0  # delta path root of the main area (the sidebar is 1)
NATIVE = 1  # Markdown.Type of st.markdown (captions are 2)
IN_LINE = re.compile(r"you are number (\d+) in line")


@dataclass
class Page:
    """What one script run drew: elements and blocks by their delta path."""

    elements: dict[tuple[int, ...], object] = field(default_factory=dict)
    blocks: dict[tuple[int, ...], object] = field(default_factory=dict)

    def chat(self) -> list[tuple[str, str]]:
        """(role, text) of each chat bubble in the main area, in order."""
        out = []
        bubbles = [p for p, b in self.blocks.items() if p[0] == MAIN and b.WhichOneof("type") == "chat_message"]
        for path in sorted(bubbles):
            inside = sorted(p for p, e in self.elements.items() if p[:len(path)] == path
                            and e.WhichOneof("type") == "markdown" and e.markdown.element_type == NATIVE)
            text = self.elements[inside[0]].markdown.body if inside else ""
            out.append((self.blocks[path].chat_message.name, text))
        return out

    def texts(self) -> list[str]:
        """Every markdown body (captions, alerts included), in path order."""
        out = []
        for _, element in sorted(self.elements.items()):
            kind = element.WhichOneof("type")
            if kind == "markdown":
                out.append(element.markdown.body)
            elif kind == "alert":
                out.append(element.alert.body)
        return out

    def widget(self, kind: str, label: str):
        """The widget of `kind` (e.g. "text_input", "button") whose label is `label`, or None."""
        found = [getattr(e, kind) for e in self.elements.values()
                 if e.WhichOneof("type") == kind and getattr(e, kind).label == label]
        return found[0] if found else None

    def chat_input(self):
        found = [e.chat_input for e in self.elements.values() if e.WhichOneof("type") == "chat_input"]
        return found[0] if found else None


class Session:
    """One user's tab. `await Session.open(url)`, then `ask()`; `close()` is closing the tab."""

    def __init__(self, ws) -> None:
        self._ws = ws
        self.page = Page()  # the run being drawn
        self.last = Page()  # the last run that finished
        self._finished = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self.on_delta: Callable[[Page], None] | None = None
        self.session_id: str | None = None  # the server's id for this tab, as it told the browser
        self._runs = 0  # script runs finished so far

    @classmethod
    async def open(cls, url: str, timeout_s: float = 120.0, source: str | None = None,
                   headers: dict[str, str] | None = None,
                   ready: Callable[[Page], bool] | None = None) -> Session:
        """A new tab; `source` is the loopback address it connects from (127.0.0.2: another client, to the server);
        `headers` go with the websocket's handshake; it is open once `ready(page)` (default: the message box)."""
        parts = urlsplit(url)
        extra: dict = {"local_addr": (source, 0)} if source else {}
        if headers:
            extra["additional_headers"] = headers
        ws = await connect(f"ws://{parts.netloc}/_stcore/stream", subprotocols=["streamlit"], max_size=None,
                           open_timeout=timeout_s, **extra)
        session = cls(ws)
        await session._rerun([])
        await session.wait_for(ready or (lambda page: page.chat_input() is not None
                                         and not page.chat_input().disabled), timeout_s)
        return session

    async def give_password(self, password: str, timeout_s: float = 60.0) -> Page:
        """Type `password` in the page's password form and press Enter; the page drawn after it."""
        field_ = self.last.widget("text_input", "Password")
        enter = self.last.widget("button", "Enter")
        if field_ is None or enter is None:
            raise RuntimeError("the page shows no password form")
        runs = self._runs
        await self._rerun([WidgetState(id=field_.id, string_value=password),
                           WidgetState(id=enter.id, trigger_value=True)])
        return await self.wait_for(lambda page: self._runs > runs, timeout_s)

    async def replay(self, widgets: list[WidgetState], timeout_s: float = 60.0) -> Page:
        """Send widget states as if this tab's user had used them (any ids, even another tab's); the page after."""
        runs = self._runs
        await self._rerun(widgets)
        return await self.wait_for(lambda page: self._runs > runs, timeout_s)

    async def _rerun(self, widgets: list[WidgetState]) -> None:
        msg = BackMsg(rerun_script=ClientState(query_string="", widget_states=WidgetStates(widgets=widgets)))
        await self._ws.send(msg.SerializeToString())

    async def _read(self) -> None:
        async for data in self._ws:
            msg = ForwardMsg()
            msg.ParseFromString(data)
            kind = msg.WhichOneof("type")
            if kind == "new_session":  # a script run starts: it draws the page anew
                self.page = Page()
                self.session_id = msg.new_session.initialize.session_id or self.session_id
            elif kind == "delta":
                path = tuple(msg.metadata.delta_path)
                delta = msg.delta.WhichOneof("type")
                if delta == "new_element":
                    self.page.elements[path] = msg.delta.new_element
                elif delta == "add_block":
                    self.page.blocks[path] = msg.delta.add_block
                if self.on_delta is not None:
                    self.on_delta(self.page)
            elif kind == "script_finished" and msg.script_finished in (
                    ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR):
                async with self._finished:
                    self.last = self.page
                    self._runs += 1
                    self._finished.notify_all()

    async def wait_for(self, done: Callable[[Page], bool], timeout_s: float) -> Page:
        """The first finished run from now on (or the last one) for which `done(page)` holds."""
        async def wait() -> Page:
            async with self._finished:
                while not done(self.last):
                    if self._reader.done():
                        raise ConnectionError(f"the server closed the session ({self._reader.exception()})")
                    await self._finished.wait()
                return self.last

        return await asyncio.wait_for(wait(), timeout_s)

    async def ask(self, text: str, timeout_s: float = 120.0) -> Reply:
        """Send `text` from the message box; return the reply once the page has drawn it whole."""
        box = self.last.chat_input()
        if box is None or box.disabled:
            raise RuntimeError("the message box is not available")
        before = len(self.last.chat())
        reply = Reply(sent_at=time.perf_counter())

        def watch(page: Page) -> None:
            chat = page.chat()
            if len(chat) > before + 1 and chat[before + 1][1] and reply.first_text_at is None:
                reply.first_text_at = time.perf_counter()
            for line in page.texts():
                place = IN_LINE.search(line)
                if place:
                    reply.queued_at = reply.queued_at or time.perf_counter()
                    reply.max_place = max(reply.max_place, int(place.group(1)))

        self.on_delta = watch
        try:
            await self._rerun([WidgetState(id=box.id, chat_input_value=ChatInputValue(data=text))])
            page = await self.wait_for(lambda p: len(p.chat()) >= before + 2 and p.chat_input() is not None
                                       and not p.chat_input().disabled, timeout_s)
        finally:
            self.on_delta = None
        reply.done_at = time.perf_counter()
        reply.role, reply.text = page.chat()[before + 1]
        reply.page_texts = page.texts()
        return reply

    async def clear_caches(self) -> None:
        """What the page menu's "Clear cache" sends; any session may send it, logged in or not."""
        await self._ws.send(BackMsg(clear_cache=True).SerializeToString())

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()


@dataclass
class Reply:
    sent_at: float
    first_text_at: float | None = None
    queued_at: float | None = None  # when the page first said "you are number N in line"
    max_place: int = 0  # the furthest back in line it was shown
    done_at: float | None = None
    role: str = ""
    text: str = ""
    page_texts: list[str] = field(default_factory=list)  # everything the finished page showed (stats lines too)

    @property
    def latency_s(self) -> float:
        return self.done_at - self.sent_at

    @property
    def first_text_s(self) -> float | None:
        return None if self.first_text_at is None else self.first_text_at - self.sent_at
