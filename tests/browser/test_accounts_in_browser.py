"""Two people in two real browsers on one server with built-in accounts: each signs in through the form, sees only
their own conversations, stays signed in through a refresh, and sees the form again after signing out. And the
shared page password of a server without accounts, remembered through a refresh."""

from __future__ import annotations

import json
import re

import pytest

from tests.browser.conftest import shot
from tests.browser.test_chat_in_browser import answer_text, ask, settle
from tests.support.accounts import add_account
from tests.support.helpers import KNOWN_ANSWERS
from tests.support.server import running_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ADA, BOB = ("ada", "ada-password-1"), ("bob", "bob-password-1")


@pytest.fixture(scope="module")
def accounts_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("browser-accounts")
    env = {"MOE_CHAT_DB": str(home / "conversations.db"), "MOE_CHAT_DEVICE": "cpu"}
    add_account(env, *ADA, admin=True)
    add_account(env, *BOB)
    with running_server(home / "server.log", env) as url:
        yield url


def signed_in_tab(browser, url: str, name: str, password: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(url)
    page.wait_for_url(re.compile(r"/signin$"))
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {name}").wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"\bready\b")).first.wait_for(timeout=60_000)
    shot(page, f"{name} signed in")
    return context, page


def sidebar_titles(page) -> str:
    return page.get_by_test_id("stSidebar").inner_text()


def test_two_people_each_see_only_their_own_conversations(accounts_server, browser):
    ada_ctx, ada = signed_in_tab(browser, accounts_server, *ADA)
    bob_ctx, bob = signed_in_tab(browser, accounts_server, *BOB)
    try:
        ask(ada, "Who are you?")
        answer_text(ada, KNOWN_ANSWERS["Who are you?"]).wait_for(timeout=30_000)
        ada.wait_for_url(re.compile(r"[?&]c="), timeout=10_000)
        ada_id = re.search(r"[?&]c=([^&]+)", ada.url).group(1)
        ask(bob, "Hello")
        answer_text(bob, KNOWN_ANSWERS["Hello"]).wait_for(timeout=30_000)
        bob.get_by_test_id("stSidebar").get_by_text("Hello (2)").wait_for(timeout=10_000)
        settle(ada)
        ada.reload()  # the list is read again
        ada.get_by_test_id("stSidebar").get_by_text("Who are you? (2)").wait_for(timeout=30_000)
        shot(ada, "ada's list")
        assert "Hello (2)" not in sidebar_titles(ada)
        assert "Who are you?" not in sidebar_titles(bob)

        with bob.expect_download() as download:  # Bob's export holds Bob's conversation only
            bob.get_by_test_id("stSidebar").get_by_role("button", name="JSON").click()
        exported = json.loads(open(download.value.path(), encoding="utf-8").read())
        assert [m["content"] for m in exported["messages"]] == ["Hello", KNOWN_ANSWERS["Hello"]]

        bob.goto(f"{accounts_server}/?c={ada_id}")
        bob.get_by_text(f"Conversation {ada_id} was not found").wait_for(timeout=30_000)
        shot(bob, "bob opened ada's link")
        assert KNOWN_ANSWERS["Who are you?"] not in bob.inner_text("body")

        bob.reload()  # a refresh keeps him signed in
        bob.get_by_text("Signed in as bob").wait_for(timeout=30_000)
        assert "/signin" not in bob.url

        settle(bob)
        bob.get_by_role("button", name="Sign out").click()
        bob.wait_for_url(re.compile(r"/signin$"), timeout=30_000)
        bob.get_by_label("Password").wait_for()
        bob.goto(accounts_server)  # the old cookie opens nothing
        bob.wait_for_url(re.compile(r"/signin$"), timeout=30_000)
        shot(bob, "bob signed out")
        ada.reload()  # Ada's sign-in is her own
        ada.get_by_text("Signed in as ada").wait_for(timeout=30_000)
    finally:
        ada_ctx.close()
        bob_ctx.close()


@pytest.fixture(scope="module")
def password_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("browser-password")
    env = {"MOE_CHAT_DB": str(home / "conversations.db"), "MOE_CHAT_DEVICE": "cpu",
           "MOE_CHAT_PASSWORD": "the-shared-one"}
    with running_server(home / "server.log", env) as url:
        yield url


def test_the_shared_password_survives_a_refresh_but_not_a_cookie_of_its_own_making(password_server, page):
    page.goto(password_server)
    page.get_by_label("Password", exact=True).fill("the-shared-one")
    page.get_by_role("button", name="Enter").click()
    page.get_by_text(re.compile(r"\bready\b")).first.wait_for(timeout=60_000)
    for _ in range(50):  # the page trades its one-time ticket for the cookie as it draws
        if any(c["name"] == "moe_chat_pass" for c in page.context.cookies()):
            break
        page.wait_for_timeout(100)
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "moe_chat_pass"]
    assert cookie["httpOnly"]
    page.reload()
    page.get_by_text(re.compile(r"\bready\b")).first.wait_for(timeout=60_000)
    assert page.get_by_label("Password", exact=True).count() == 0
    shot(page, "refreshed, still in")
    page.context.clear_cookies()
    page.context.add_cookies([{**cookie, "value": "9999999999.forged"}])
    page.reload()
    page.get_by_label("Password", exact=True).wait_for(timeout=30_000)
