"""The password throttle's rules, on a clock the test moves: who waits, and for how long."""

from __future__ import annotations

from components.gate import GuessThrottle, throttle_keys


def make(now: list[float], **kw) -> GuessThrottle:
    return GuessThrottle(free=3, base_s=2.0, clock=lambda: now[0], **kw)


def test_a_guessing_tab_slows_down_alone_and_a_fresh_tab_is_never_locked_out():
    now = [100.0]
    throttle = make(now, per_second=1e6)
    guesser, owner = throttle_keys("tab-a", None), throttle_keys("tab-b", None)  # one tunnel: no address
    for _ in range(6):
        now[0] += throttle.begin(guesser)
        throttle.failed(guesser)
    assert throttle.begin(guesser) > 0  # the guesser waits
    assert throttle.begin(owner) == 0  # the owner's tab does not


def test_a_known_address_is_counted_across_its_tabs():
    now = [100.0]
    throttle = make(now, per_second=1e6)
    for tab in ("t1", "t2", "t3"):
        assert throttle.begin(throttle_keys(tab, "203.0.113.9")) == 0
        throttle.failed(throttle_keys(tab, "203.0.113.9"))
    assert throttle.begin(throttle_keys("t4", "203.0.113.9")) == 2.0  # a new tab of that address waits too
    assert throttle.begin(throttle_keys("t5", "198.51.100.1")) == 0  # another address does not


def test_comparisons_are_paced_for_the_whole_server_in_the_order_they_come():
    now = [100.0]
    throttle = make(now, per_second=2.0)
    waits = [throttle.pace() for _ in range(5)]  # five fresh tabs at once
    assert waits == [0.0, 0.5, 1.0, 1.5, 2.0]
    now[0] += 10
    assert throttle.pace() == 0.0  # a quiet server compares at once


def test_what_is_remembered_is_bounded():
    now = [100.0]
    throttle = make(now, remembered=100)
    for i in range(1000):
        throttle.failed(throttle_keys(f"tab-{i}", None))
    assert throttle.counted == 100


def test_a_flood_of_tries_refused_for_their_wait_does_not_push_the_next_try_further_out():
    now = [0.0]
    throttle = GuessThrottle(per_second=2.0, clock=lambda: now[0])
    waits = [throttle.pace(max_wait_s=5.0) for _ in range(1000)]
    assert waits[:11] == [i / 2 for i in range(11)] and set(waits[11:]) == {5.5}  # eleven slots taken, then none
    now[0] = 6.0  # the flood has stopped
    assert throttle.pace(max_wait_s=5.0) == 0.0
