"""The sidebar says whether the selected model fits, before anything is downloaded or loaded."""

from __future__ import annotations

from tests.app.conftest import status_text


def sidebar_texts(at) -> str:
    return " ".join(e.value for e in [*at.sidebar.success, *at.sidebar.error, *at.sidebar.warning])


def test_a_model_too_big_for_this_machine_is_called_out_without_loading_it(app):
    app.selectbox(key="model_choice").select("qwen1.5-moe-a2.7b-chat").run()
    text = sidebar_texts(app)
    assert "**Does not fit this machine** on CPU:" in text and "no GPU" in text
    assert any("Qwen1.5-MoE-A2.7B-Chat: **does not fit this machine**" in w.value for w in app.sidebar.warning)
    assert "Demo MoE (tiny, bundled)** ready" in status_text(app)  # nothing was loaded or downloaded


def test_planning_for_imaginary_gpus_shows_the_split(app):
    app.selectbox(key="model_choice").select("qwen1.5-moe-a2.7b-chat").run()
    app.sidebar.text_input(key="plan_gpus").input("2x24GiB").run()
    assert "**Fits** on 2 x 24.0 GiB GPUs" in sidebar_texts(app)
    assert not [w for w in app.sidebar.warning if "does not fit" in w.value]
    captions = " ".join(c.value for c in app.sidebar.caption)
    assert "14.32 B parameters, 2.69 B active per token" in captions and "192 KiB per token" in captions
    assert "2 x 1.2 x P would budget 34.4 GB" in captions
    app.selectbox(key="model_choice").select("xverse-moe-a4.2b").run()
    assert "**Needs 8-bit** on 2 x 24.0 GiB GPUs" in sidebar_texts(app)  # per-expert 8-bit experts
    app.sidebar.text_input(key="plan_gpus").input("3x24GiB").run()
    assert "**Fits** on 3 x 24.0 GiB GPUs" in sidebar_texts(app)


def test_a_bad_gpu_list_is_explained(app):
    app.sidebar.text_input(key="plan_gpus").input("lots").run()
    assert any("is not a GPU list like 2x24GiB" in e.value for e in app.sidebar.error)
