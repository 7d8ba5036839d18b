"""In Chromium: an edit makes a second version, the ‹ › arrows move between the versions, and the sidebar's search
finds a Chinese phrase and an English word of an older conversation and opens it on the branch that holds each."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import shot
from tests.browser.test_chat_in_browser import answer_text, ask, settle
from tests.support.helpers import KNOWN_ANSWERS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHINESE = "请介绍一下混合专家模型"


def bubbles(page):
    return page.get_by_test_id("stChatMessage")


def bubble_texts(page) -> list[str]:
    settle(page)
    return [b.get_by_test_id("stMarkdownContainer").first.inner_text().strip() for b in bubbles(page).all()]


def version(page, text: str) -> None:
    page.get_by_test_id("stCaptionContainer").get_by_text(text, exact=True).wait_for(timeout=30_000)


def search(page, query: str) -> None:
    settle(page)
    box = page.get_by_label("Search conversations")
    box.fill(query)
    box.press("Enter")
    settle(page)


def test_arrows_move_between_versions_and_search_opens_the_right_branch(server, page):
    page.goto(server["url"])
    page.get_by_text(re.compile(r"ready")).first.wait_for(timeout=60_000)
    ask(page, CHINESE)
    bubbles(page).nth(1).get_by_test_id("stMarkdownContainer").first.wait_for(timeout=30_000)
    ask(page, "Hello")
    answer_text(page, KNOWN_ANSWERS["Hello"]).wait_for(timeout=30_000)
    settle(page)

    page.locator('[class*="st-key-edit_"] button').last.click()  # Edit under "Hello", message 3 of 4
    settle(page)
    page.get_by_label("Edit your message").fill("Who are you?")
    page.locator(".st-key-edit_send button").click()
    answer_text(page, KNOWN_ANSWERS["Who are you?"]).wait_for(timeout=30_000)
    version(page, "2/2")
    shot(page, "edited: version 2 of 2")
    assert bubble_texts(page)[2:] == ["Who are you?", KNOWN_ANSWERS["Who are you?"]]

    settle(page)
    page.get_by_role("button", name="‹").first.click()  # back to the first version
    version(page, "1/2")
    answer_text(page, KNOWN_ANSWERS["Hello"]).wait_for(timeout=30_000)
    assert bubble_texts(page)[2:] == ["Hello", KNOWN_ANSWERS["Hello"]]
    shot(page, "back to version 1 of 2")

    page.locator(".st-key-clear_conversation button").click()  # a new chat: the old one is now an older one
    ask(page, "What is 2 + 2?")
    answer_text(page, KNOWN_ANSWERS["What is 2 + 2?"]).wait_for(timeout=30_000)

    search(page, "混合专家")
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("混合专家", exact=True).first.wait_for(timeout=30_000)  # the highlighted match
    shot(page, "search: a Chinese phrase")
    sidebar.locator('[class*="st-key-hit_"] button').first.click()
    page.get_by_text("Found by your search").wait_for(timeout=30_000)
    assert bubble_texts(page)[0] == CHINESE
    assert bubble_texts(page)[2] == "Hello"  # where the conversation was left

    search(page, "Who")  # only in the edited version
    sidebar.locator('[class*="st-key-hit_"] button').first.click()
    version(page, "2/2")
    assert bubble_texts(page)[2:] == ["Who are you?", KNOWN_ANSWERS["Who are you?"]]
    shot(page, "search: an English word, opened on its branch")
