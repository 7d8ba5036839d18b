"""A real `streamlit run app.py` server and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.support.helpers import ROOT
from tests.support.server import running_server

CHROMIUM = os.environ.get("MOE_CHAT_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
# Without these, Chromium keeps trying to reach Google's services, which a closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def server(tmp_path_factory, models_file):
    """The app exactly as a user starts it, on a free loopback port, with its log kept for inspection."""
    log_path = tmp_path_factory.mktemp("server") / "streamlit.log"
    with running_server(log_path, {"MOE_CHAT_MODELS_FILE": str(models_file)}) as url:
        yield {"url": url, "log": log_path}


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run the README's test command, which installs it.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


_SHOTS: list[tuple[str, bytes]] = []  # (step, PNG) of the running test


def shot(page, step: str) -> None:
    """Remember what `page` shows after `step`; the pictures are written out only if the test fails."""
    if not page.is_closed():
        _SHOTS.append((step, page.screenshot()))


def failed(request) -> bool:
    report = getattr(request.node, "rep_call", None)
    return report is not None and report.failed


@pytest.fixture(autouse=True)
def step_screenshots(request):
    """A failed browser test leaves test-artifacts/screenshots/<test>/ with a picture of each step."""
    _SHOTS.clear()
    yield
    if failed(request):
        folder = ARTIFACTS / request.node.name
        folder.mkdir(parents=True, exist_ok=True)
        for i, (step, data) in enumerate(_SHOTS, 1):
            (folder / f"{i:02d}-{re.sub(r'[^A-Za-z0-9]+', '-', step).strip('-')[:60]}.png").write_bytes(data)
    _SHOTS.clear()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    yield pg
    if failed(request):
        (ARTIFACTS / request.node.name).mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / request.node.name / "final.png"), full_page=True)
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
