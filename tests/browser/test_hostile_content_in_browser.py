"""What a model server sends is shown, never fetched: an answer with a Markdown image, drawn in Chromium, makes the
reader's browser call nobody (the attack pass found that it did)."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.browser.test_chat_in_browser import ask, switch_model
from tests.support.fake_openai import MODEL, running_fake
from tests.support.server import running_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]


class Tracker(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        Tracker.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_an_image_in_a_servers_answer_is_not_fetched_by_the_readers_browser(tmp_path, page):
    tracker = ThreadingHTTPServer(("127.0.0.1", 0), Tracker)
    threading.Thread(target=tracker.serve_forever, daemon=True).start()
    pixel = f"http://127.0.0.1:{tracker.server_address[1]}/pixel.png"
    try:
        with running_fake() as fake:
            fake.mode, fake.answer = "markdown", f"Here: ![logo]({pixel}) and ![ref][1] done.\n\n[1]: {pixel}?ref"
            models = tmp_path / "models.toml"
            models.write_text(f'[[models]]\nid = "remote"\nname = "Hostile server"\nsource = "openai"\n'
                              f'base_url = "{fake.base_url}"\nmodel = "{MODEL}"\n')
            env = {"MOE_CHAT_MODELS_FILE": str(models), "MOE_CHAT_DB": str(tmp_path / "db.sqlite")}
            with running_server(tmp_path / "streamlit.log", env) as url:
                page.goto(url)
                page.get_by_text(re.compile(r"\bready\b")).first.wait_for(timeout=60_000)
                switch_model(page, "Hostile server", button="Connect", done="connected")
                ask(page, "Who are you?")
                bubble = page.get_by_test_id("stChatMessage").last
                bubble.get_by_text("done.", exact=False).wait_for(timeout=30_000)
                page.wait_for_timeout(1500)  # time for any image the page drew to be fetched
                links = bubble.locator(f'a[href^="{pixel}"]')
                assert Tracker.hits == []
                assert links.count() >= 1 and bubble.locator("img").count() == 0
    finally:
        tracker.shutdown()
