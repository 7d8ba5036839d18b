"""End to end: a person opens the page in Chromium, asks the demo model, and watches the answer stream in."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.conftest import shot
from tests.support.helpers import KNOWN_ANSWERS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Records every distinct text the last assistant bubble shows, as the page draws it.
WATCH_ANSWER = """
() => {
  window.__seen = [];
  const observer = new MutationObserver(() => {
    const bubbles = document.querySelectorAll('[data-testid="stChatMessage"]');
    if (bubbles.length < 2) return;
    const body = bubbles[bubbles.length - 1].querySelector('[data-testid="stMarkdownContainer"]');
    const text = body ? body.innerText.trim() : '';
    if (text && window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
  });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true});
}
"""


def answer_text(page, text: str):
    """The answer as drawn in a chat bubble (not the copy of it inside the Copy popover)."""
    return page.get_by_test_id("stChatMessage").get_by_test_id("stMarkdownContainer").get_by_text(text, exact=True)


def settle(page) -> None:
    """Wait until the page's script run has finished, so what is typed next goes to a page drawn whole."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=60_000)


def ask(page, text: str) -> None:
    settle(page)
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(text)
    box.press("Enter")
    shot(page, f"sent {text}")


def test_demo_answers_in_the_browser_and_streams(server, page):
    page.goto(server["url"])
    page.get_by_text(re.compile(r"Demo MoE \(tiny, bundled\)\s*ready")).wait_for(timeout=60_000)
    page.get_by_text("bundled demo model").wait_for()

    ask(page, "Who are you?")
    answer_text(page, KNOWN_ANSWERS["Who are you?"]).wait_for(timeout=30_000)

    page.evaluate(WATCH_ANSWER)
    ask(page, "Tell me a story.")
    story = KNOWN_ANSWERS["Tell me a story."]
    page.get_by_test_id("stChatMessage").nth(3).get_by_test_id("stMarkdownContainer").get_by_text(
        story, exact=True).wait_for(timeout=30_000)
    seen = [s.replace("▌", "").strip() for s in page.evaluate("window.__seen")]
    partial = [s for s in seen if s and s != story and story.startswith(s)]
    assert len(partial) >= 2, f"the answer did not visibly grow; states seen: {seen}"

    bubbles = page.get_by_test_id("stChatMessage")
    assert bubbles.count() == 4
    answer = bubbles.nth(1).get_by_test_id("stMarkdownContainer").first.inner_text().strip()
    assert answer == KNOWN_ANSWERS["Who are you?"]
    assert "tokens" in bubbles.nth(1).inner_text()  # the answer's stats line


def test_server_log_stays_quiet_during_a_chat(server, page):
    page.goto(server["url"])
    page.get_by_text(re.compile(r"ready")).first.wait_for(timeout=60_000)
    ask(page, "Hello")
    answer_text(page, KNOWN_ANSWERS["Hello"]).wait_for(timeout=30_000)
    log = server["log"].read_text()
    noisy = [line for line in log.splitlines() if re.search(r"warn|error|traceback|exception", line, re.I)]
    assert noisy == [], "\n".join(noisy)


def open_ready(browser, url: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.goto(url)
    pg.get_by_text(re.compile(r"\bready\b")).first.wait_for(timeout=60_000)
    settle(pg)
    shot(pg, "opened")
    return context, pg


def test_a_refresh_returns_to_the_same_conversation(server, page):
    page.goto(server["url"])
    page.get_by_text(re.compile(r"\bready\b")).first.wait_for(timeout=60_000)
    ask(page, "What is 2 + 2?")
    answer_text(page, KNOWN_ANSWERS["What is 2 + 2?"]).wait_for(timeout=30_000)
    page.wait_for_url(re.compile(r"[?&]c="), timeout=10_000)
    page.reload()
    answer_text(page, KNOWN_ANSWERS["What is 2 + 2?"]).wait_for(timeout=30_000)
    assert page.get_by_test_id("stChatMessage").count() == 2


def test_two_browsers_chat_at_once_and_each_gets_its_own_answer(server, browser):
    first_ctx, first = open_ready(browser, server["url"])
    second_ctx, second = open_ready(browser, server["url"])
    try:
        ask(first, "Tell me a story.")
        ask(second, "What is a mixture of experts?")
        answer_text(first, KNOWN_ANSWERS["Tell me a story."]).wait_for(timeout=30_000)
        answer_text(second, KNOWN_ANSWERS["What is a mixture of experts?"]).wait_for(timeout=30_000)
        assert KNOWN_ANSWERS["What is a mixture of experts?"] not in first.inner_text("body")
        assert KNOWN_ANSWERS["Tell me a story."] not in second.inner_text("body")
    finally:
        first_ctx.close()
        second_ctx.close()


def test_switching_model_shows_the_new_status(server, page):
    page.goto(server["url"])
    page.get_by_text(re.compile(r"\bready\b")).first.wait_for(timeout=60_000)
    switch_model(page, "Tiny random MoE")
    page.get_by_role("button", name="Reload").wait_for()
    switch_model(page, "Demo MoE (tiny, bundled)")  # back to the demo, for the tests that share this server


def switch_model(page, name: str, button: str = "Switch", done: str = "ready") -> None:
    settle(page)
    label = page.get_by_test_id("stWidgetLabel").get_by_text("Model", exact=True)
    picker = page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").filter(has=label)
    option = page.get_by_role("option", name=name)
    for _ in range(3):  # a rerun caused by the last focused widget losing focus can close the list at once
        picker.click()
        try:
            option.wait_for(timeout=5_000)
            break
        except PlaywrightTimeout:
            continue
    option.click()
    page.get_by_role("button", name=button).click()
    page.get_by_text(re.compile(re.escape(name) + r"\s*" + done)).wait_for(timeout=60_000)
    settle(page)
    shot(page, f"switched to {name}")


def test_stop_mid_answer_keeps_the_partial_answer(server, page):
    page.goto(server["url"])
    page.get_by_text(re.compile(r"\bready\b")).first.wait_for(timeout=60_000)
    switch_model(page, "Tiny random MoE")  # untrained: it talks until max new tokens, slowly enough to stop
    try:
        set_max_new_tokens(page, 1900)
        ask(page, "Hi")
        bubble = page.get_by_test_id("stChatMessage").nth(1)
        bubble.get_by_test_id("stMarkdownContainer").first.wait_for(timeout=30_000)
        bubble.get_by_role("button", name="Stop").click()
        shot(page, "clicked Stop")
        stats = page.get_by_test_id("stChatMessage").nth(1).get_by_text(re.compile(r"(\d+) tokens · stopped"))
        stats.wait_for(timeout=30_000)
        tokens = int(re.search(r"(\d+) tokens · stopped", stats.inner_text()).group(1))
        assert 0 < tokens < 1900, f"{tokens} tokens: the answer was not stopped part way"
        text = bubble.get_by_test_id("stMarkdownContainer").first.inner_text()
        page.wait_for_timeout(1000)
        assert bubble.get_by_test_id("stMarkdownContainer").first.inner_text() == text, "it kept growing"
        assert len(text) > 0
        page.get_by_test_id("stChatInputTextArea").wait_for()  # the box is back for the next message
    finally:
        switch_model(page, "Demo MoE (tiny, bundled)")  # for the tests that share this server


def set_max_new_tokens(page, n: int) -> None:
    page.get_by_test_id("stSidebar").get_by_text("Generation", exact=True).click()
    limit = page.get_by_label("Max new tokens")
    settle(page)
    limit.fill(str(n))
    limit.press("Enter")
    page.wait_for_timeout(300)  # the rerun the new value asks for starts
    settle(page)


def test_closing_a_tab_mid_answer_frees_the_model_for_the_next_in_line(server, browser):
    a_ctx, a = open_ready(browser, server["url"])
    b_ctx = None
    try:
        switch_model(a, "Tiny random MoE")  # untrained: it talks until max new tokens
        set_max_new_tokens(a, 2000)  # about 13 s on 2 cores; the context holds 2,048
        ask(a, "Hi")
        a.get_by_test_id("stChatMessage").nth(1).get_by_test_id("stMarkdownContainer").first.wait_for(timeout=30_000)
        a.wait_for_url(re.compile(r"[?&]c="), timeout=10_000)
        a_url = a.url
        b_ctx, b = open_ready(browser, server["url"])
        set_max_new_tokens(b, 8)
        ask(b, "Hi")
        b.get_by_text(re.compile(r"you are number 1 in line")).wait_for(timeout=20_000)
        shot(b, "waiting in line")
        a_ctx.close()  # the tab closes mid-answer
        b.get_by_text(re.compile(r"8 tokens · hit max new tokens")).wait_for(timeout=30_000)

        a_ctx, a = open_ready(browser, a_url)  # the closed tab's conversation, reopened from its link
        stats = a.get_by_test_id("stChatMessage").nth(1).get_by_text(re.compile(r"(\d+) tokens · stopped"))
        stats.wait_for(timeout=30_000)
        tokens = int(re.search(r"(\d+) tokens · stopped", stats.inner_text()).group(1))
        assert 0 < tokens < 2000, f"{tokens} tokens: the closed tab's answer was not stopped"
    finally:
        switch_model(a, "Demo MoE (tiny, bundled)")  # for the tests that share this server
        a_ctx.close()
        if b_ctx is not None:
            b_ctx.close()


def test_a_model_switch_stops_other_users_answers_and_says_why(server, browser):
    a_ctx, a = open_ready(browser, server["url"])
    b_ctx = None
    switched_back = False
    try:
        switch_model(a, "Tiny random MoE")
        b_ctx, b = open_ready(browser, server["url"])
        set_max_new_tokens(b, 2000)
        ask(b, "Hi")
        b.get_by_test_id("stChatMessage").nth(1).get_by_test_id("stMarkdownContainer").first.wait_for(timeout=30_000)
        switch_model(a, "Demo MoE (tiny, bundled)")  # while B's answer streams
        switched_back = True
        note = b.get_by_text(re.compile(r"(\d+) tokens · Stopped: the model is being switched to Demo MoE"))
        note.wait_for(timeout=30_000)
        tokens = int(re.search(r"(\d+) tokens", note.inner_text()).group(1))
        assert 0 < tokens < 2000
        b.get_by_text(re.compile(r"Demo MoE \(tiny, bundled\)\s*ready")).wait_for(timeout=30_000)
    finally:
        if not switched_back:
            switch_model(a, "Demo MoE (tiny, bundled)")  # for the tests that share this server
        a_ctx.close()
        if b_ctx is not None:
            b_ctx.close()
