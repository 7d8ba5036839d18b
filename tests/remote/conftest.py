"""One `transformers serve` and one vLLM (CPU) server for the whole run, both on the demo model (a test that kills
one starts it again)."""

from __future__ import annotations

import os

import pytest

from tests.app.conftest import _fresh_engine, db_path  # noqa: F401 - the page fixtures, for the AppTest pages here
from tests.support.helpers import DEMO_DIR
from tests.support.model_servers import TransformersServe, VllmServer, vllm_available
from tests.support.widen_demo import widen_demo


@pytest.fixture(scope="session")
def tserve(tmp_path_factory):
    server = TransformersServe(tmp_path_factory.mktemp("transformers-serve")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vllm(tmp_path_factory):
    if not vllm_available():
        if os.environ.get("MOE_CHAT_REQUIRE_VLLM") == "1":  # scripts/test.sh installs it: its absence is a failure
            pytest.fail("vLLM's venv is missing: run `bash scripts/test.sh` (it installs .venv-vllm)")
        pytest.skip("vLLM's CPU build is not installed (bash scripts/test.sh installs it into .venv-vllm)")
    home = tmp_path_factory.mktemp("vllm")
    server = VllmServer(home, widen_demo(DEMO_DIR, home / "demo-widened")).start()
    yield server
    server.stop()
