"""A hub model downloads in the background with a progress bar; a page refresh neither restarts nor repeats it."""

from __future__ import annotations

import time

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.app.conftest import TIMEOUT, chat_messages, run_until
from tests.conftest import MS_REPO
from tests.support.helpers import KNOWN_ANSWERS, ROOT


@pytest.fixture
def hub_page(monkeypatch, tmp_path, hub):
    (tmp_path / "models.toml").write_text(
        f'[[models]]\nid = "hub-demo"\nname = "Hub demo"\nsource = "modelscope"\nmodelscope_id = "{MS_REPO}"\n'
    )
    monkeypatch.setenv("MOE_CHAT_MODELS_FILE", str(tmp_path / "models.toml"))
    monkeypatch.setenv("MOE_CHAT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("model_loader.download_progress.EMIT_INTERVAL_S", 0.0)
    hub.chunk_delay_s = 0.25  # ~3 MB of weights in 12 chunks: about 3 s to watch
    st.cache_resource.clear()
    yield hub
    st.cache_resource.clear()


def open_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.run()
    return at


def progress_texts(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.sidebar.get("progress") if "files)" in p.proto.text]


def test_download_shows_progress_survives_a_refresh_and_then_chats(hub_page):
    page = open_page()
    page.selectbox(key="model_choice").select("hub-demo").run()
    page.button(key="load_model").click().run()

    deadline = time.monotonic() + 20
    while not progress_texts(page):
        assert time.monotonic() < deadline, "no download progress was shown"
        time.sleep(0.2)
        page.run()
    line = progress_texts(page)[0]
    assert "MiB" in line and " / " in line and "files)" in line

    refreshed = open_page()  # a browser refresh: a new session while the download runs
    assert progress_texts(refreshed) or "Hub demo** ready" in " ".join(e.value for e in refreshed.sidebar.success)
    run_until(refreshed, "Hub demo** ready")
    assert len(hub_page.transfers_of("model.safetensors")) == 1  # downloaded once, not restarted

    refreshed.chat_input[0].set_value("Hello").run()
    assert chat_messages(refreshed)[-1] == ("assistant", KNOWN_ANSWERS["Hello"])


def test_a_download_that_does_not_fit_the_disk_is_refused_and_the_demo_keeps_answering(hub_page, small_disk,
                                                                                       monkeypatch, tmp_path):
    from common.units import gb
    from model_loader.disk import disk_room
    from tests.conftest import HF_REPO
    from tests.support.hub_server import needed_files

    (tmp_path / "models.toml").write_text(f'[[models]]\nid = "hub-big"\nname = "Hub big"\nsource = "huggingface"\n'
                                          f'hf_id = "{HF_REPO}"\n')
    monkeypatch.setenv("MOE_CHAT_CACHE_DIR", str(small_disk / "cache"))  # 8 MiB, for 12 MiB of weights
    free = disk_room(small_disk).free_bytes
    need = sum(len(hub_page.repos[HF_REPO].files[name]) for name in needed_files(hub_page.repos[HF_REPO]))
    page = open_page()
    run_until(page, "Demo MoE (tiny, bundled)** ready")
    assert f"Downloads go to `{small_disk / 'cache'}` (set by MOE_CHAT_CACHE_DIR): {gb(free)} free." in [
        c.value.split(":material/download: ")[-1] for c in page.sidebar.caption]
    page.selectbox(key="model_choice").select("hub-big").run()
    page.button(key="load_model").click().run()
    run_until(page, "to spare")
    refusal = " ".join(e.value for e in page.sidebar.error)
    assert f"Downloading {HF_REPO} needs {gb(need)} and" in refusal and f"{gb(free)} free at {small_disk}" in refusal
    assert "set MOE_CHAT_CACHE_DIR to a folder on a larger disk" in refusal
    assert [p for p in small_disk.rglob("*") if p.is_file()] == []  # refused before the first byte
    assert not [t for t in hub_page.transfers if t.path.endswith(".safetensors")]

    page.chat_input[0].set_value("Hello").run()
    assert chat_messages(page)[-1] == ("assistant", KNOWN_ANSWERS["Hello"])
    assert "Demo MoE (tiny, bundled)** ready" in " ".join(e.value for e in page.sidebar.success)
