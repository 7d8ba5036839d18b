"""Faults seen from the page: each shows its message to the session that met it while another keeps chatting."""

from __future__ import annotations

import shutil
from contextlib import contextmanager

import pytest

from tests.app.conftest import action, chat_messages, open_page, run_until, status_text
from tests.conftest import MS_REPO
from tests.support.helpers import KNOWN_ANSWERS, break_tokenizer, delete_a_shard, truncate_last_shard

LOAD_FAULTS = {  # row id: (how the folder is damaged, what the page must say)
    "truncated-shard": (truncate_last_shard, "is damaged: it is cut short"),
    "missing-shard": (delete_a_shard, "weight files listed in model.safetensors.index.json are missing"),
    "broken-tokenizer": (break_tokenizer, "tokenizer files (tokenizer.json, tokenizer_config.json, tokenizer.model) "
                                          "are damaged or missing"),
}


@pytest.fixture
def two_sessions(monkeypatch, tmp_path, page_for, sharded_model_dir, hub):
    """Two browser sessions on one server with the demo loaded; the registry holds damaged and hub rows."""
    import modelscope_hub._download

    rows = []
    for row_id, (damage, _) in LOAD_FAULTS.items():
        folder = tmp_path / row_id
        shutil.copytree(sharded_model_dir, folder)
        damage(folder)
        rows.append(f'[[models]]\nid = "{row_id}"\nname = "Damaged {row_id}"\nsource = "local"\npath = "{folder}"\n')
    rows.append(f'[[models]]\nid = "hub-demo"\nname = "Hub demo"\nsource = "modelscope"\nmodelscope_id = "{MS_REPO}"\n')
    (tmp_path / "models.toml").write_text("\n".join(rows))
    monkeypatch.setattr(modelscope_hub._download, "DOWNLOAD_RETRY_TIMES", 0)  # one dropped connection ends it
    a = page_for(tmp_path / "models.toml", MOE_CHAT_CACHE_DIR=str(tmp_path / "cache"))
    b = open_page()
    for page in (a, b):
        assert "Demo MoE (tiny, bundled)** ready" in status_text(page), status_text(page)
    a.chat_input[0].set_value("Hello").run()
    return a, b


def ask(page, text: str) -> tuple[str, str]:
    page.chat_input[0].set_value(text).run()
    return chat_messages(page)[-1]


def assert_still_serving(a, b) -> None:
    """The other session chats, and the one that met the fault has its conversation and chats on."""
    assert ask(b, "Who are you?") == ("assistant", KNOWN_ANSWERS["Who are you?"])
    assert chat_messages(a)[:2] == [("user", "Hello"), ("assistant", KNOWN_ANSWERS["Hello"])]
    assert ask(a, "Tell me a story.") == ("assistant", KNOWN_ANSWERS["Tell me a story."])


def load(page, row_id: str) -> None:
    page.selectbox(key="model_choice").select(row_id).run()
    page.button(key="load_model").click().run()


@pytest.mark.parametrize("row_id", LOAD_FAULTS)
def test_a_damaged_checkpoint_is_explained_and_the_loaded_model_keeps_serving(two_sessions, row_id):
    a, b = two_sessions
    load(a, row_id)
    run_until(a, LOAD_FAULTS[row_id][1])
    assert "Demo MoE (tiny, bundled)** ready" in status_text(a), "the loaded model was dropped for nothing"
    assert_still_serving(a, b)


def test_a_download_that_dies_half_way_is_explained_and_the_next_load_resumes(two_sessions, hub):
    a, b = two_sessions
    hub.drop_after("model.safetensors", 1 << 20)
    load(a, "hub-demo")
    run_until(a, "Could not download tester/demo-moe from ModelScope")
    assert "the next attempt resumes" in status_text(a)
    assert "Demo MoE (tiny, bundled)** ready" in status_text(a)
    assert_still_serving(a, b)
    a.button(key="load_model").click().run()  # as the message says: try again
    run_until(a, "Hub demo** ready")
    first, second = hub.transfers_of("model.safetensors")
    assert first.dropped and second.range_start == first.bytes_sent == 1 << 20  # resumed, not restarted


@contextmanager
def every_forward_raises(exc: BaseException):
    """Make the next forward pass of any model fail, as a GPU fault would."""
    import torch

    def hook(module, args):
        handle.remove()
        raise exc

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def generation_faults():
    import torch

    return {
        "raises": (RuntimeError("CUDA error: an illegal memory access was encountered"),
                   "Generation failed (RuntimeError: CUDA error: an illegal memory access was encountered). The "
                   "conversation is kept; try again"),
        "out of memory": (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                          "Out of GPU memory while generating. The conversation is kept: lower 'max new tokens'"),
    }


@pytest.mark.parametrize("fault", ["raises", "out of memory"])
def test_a_failed_generation_is_explained_and_the_chat_goes_on(two_sessions, fault):
    a, b = two_sessions
    exc, message = generation_faults()[fault]
    with every_forward_raises(exc):
        a.chat_input[0].set_value("Tell me a story.").run()
    assert any(message in e.value for e in a.main.error), [e.value for e in a.main.error]
    assert "failed" in " ".join(c.value for c in a.main.caption)  # the answer's stats line
    a.run()  # still shown after the next rerun, under the failed answer
    assert any(message in e.value for e in a.main.error)
    assert not b.main.error
    assert ask(b, "Who are you?") == ("assistant", KNOWN_ANSWERS["Who are you?"])
    action(a, "regenerate").click().run()  # as the message says: try again
    assert chat_messages(a) == [("user", "Hello"), ("assistant", KNOWN_ANSWERS["Hello"]),
                                ("user", "Tell me a story."), ("assistant", KNOWN_ANSWERS["Tell me a story."])]
    assert not a.main.error  # the failed answer and its message were replaced
