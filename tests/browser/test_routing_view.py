"""The experts at work in a real browser: the switch, a demo answer, the view drawn under it. Its screenshot is kept
in test-artifacts/routing-view.png (the README's picture, docs/routing-view.png, is one of these)."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import ARTIFACTS
from tests.browser.test_chat_in_browser import answer_text, ask, settle
from tests.support.helpers import KNOWN_ANSWERS

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PICTURE = ARTIFACTS.parent / "routing-view.png"


def test_the_view_of_a_demo_answer_is_drawn_and_kept_as_a_picture(server, page):
    page.set_viewport_size({"width": 1400, "height": 1300})
    page.goto(server["url"])
    page.get_by_text(re.compile(r"Demo MoE \(tiny, bundled\)\s*ready")).wait_for(timeout=60_000)
    settle(page)
    switch = page.get_by_test_id("stSidebar").get_by_text("Show the experts at work")
    switch.click()
    settle(page)
    try:
        ask(page, "Who are you?")
        answer_text(page, KNOWN_ANSWERS["Who are you?"]).wait_for(timeout=30_000)
        settle(page)
        view = page.get_by_test_id("stExpander").filter(has_text="Experts at work: 23 answer and 23 prompt tokens")
        view.get_by_text(re.compile("Experts at work")).click()
        charts = view.locator(".vega-embed")
        charts.first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)  # the charts finish drawing
        assert charts.count() >= 2 and view.locator("canvas, svg").count() >= 2
        PICTURE.parent.mkdir(parents=True, exist_ok=True)
        view.screenshot(path=str(PICTURE))
        assert PICTURE.stat().st_size > 10_000
    finally:
        settle(page)
        switch.click()  # off again, for the tests that share this server
        settle(page)
