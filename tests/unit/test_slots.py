"""The line in front of the model: fair between client addresses, first come first served within one."""

from __future__ import annotations

import threading
import time

import pytest

from chat_engine.slots import LineFullError, SlotQueue


class Waiter:
    """A request waiting in a thread, as a reply's worker does."""

    def __init__(self, line: SlotQueue, client: str | None, name: str, served: list[str]) -> None:
        self.name, self.stop = name, threading.Event()
        self.thread = threading.Thread(target=self._run, args=(line, client, served), daemon=True)
        self.thread.start()

    def _run(self, line: SlotQueue, client: str | None, served: list[str]) -> None:
        if line.acquire(self, self.stop, client):
            served.append(self.name)
            time.sleep(0.01)
            line.release()


def settle(line: SlotQueue, waiting: int) -> None:
    deadline = time.monotonic() + 5
    while line.waiting != waiting:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_a_flood_from_one_address_does_not_push_another_address_to_the_back():
    line, served = SlotQueue(1), []
    gate = threading.Event()
    holder = threading.Thread(target=lambda: (line.acquire("holder", threading.Event(), "flood"), gate.wait(5),
                                              line.release()), daemon=True)
    holder.start()
    settle(line, 0)
    flood = []
    for i in range(20):
        flood.append(Waiter(line, "flood", f"f{i}", served))
        settle(line, i + 1)
    victim = Waiter(line, "victim", "victim", served)
    settle(line, 21)
    assert line.position(victim) == 1  # the flood's address was served last: the victim goes first
    assert [line.position(w) for w in flood[:3]] == [2, 3, 4]  # the flood keeps its own order
    gate.set()
    for w in [victim, *flood]:
        w.thread.join(timeout=5)
    assert served[0] == "victim" and served[1:] == [f"f{i}" for i in range(20)]


def test_two_busy_addresses_take_turns_and_each_keeps_its_order():
    line, served = SlotQueue(1), []
    stop = threading.Event()
    assert line.acquire("running", stop, "c")
    a = [Waiter(line, "a", f"a{i}", served) for i in range(3)]
    settle(line, 3)
    b = [Waiter(line, "b", f"b{i}", served) for i in range(3)]
    settle(line, 6)
    line.release()
    for w in a + b:
        w.thread.join(timeout=5)
    assert served == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_one_address_may_hold_only_its_share_of_the_line():
    line = SlotQueue(1, per_client=2)
    assert line.acquire("running", threading.Event(), "x")
    waiters = [Waiter(line, "x", f"x{i}", []) for i in range(2)]
    settle(line, 2)
    with pytest.raises(LineFullError, match="2 requests waiting"):
        line.enter("third", "x")
    line.enter("y-ticket", "y")  # another address still has room
    assert line.waiting == 3
    for w in waiters:
        w.stop.set()
        w.thread.join(timeout=5)
    leave = threading.Event()
    leave.set()
    assert line.acquire("y-ticket", leave, "y") is False and line.waiting == 0  # stopped: it leaves the line
    line.release()
