"""The page, driven headless with Streamlit's AppTest: chat, persistence, switching, clearing."""

from __future__ import annotations

from tests.app.conftest import chat_messages, open_page, run_until, status_text
from tests.conftest import RANDOM_MODEL_ID, RANDOM_MODEL_NAME, XVERSE_MODEL_ID
from tests.support.helpers import KNOWN_ANSWERS


def test_page_starts_with_the_demo_model_ready(app):
    assert "Demo MoE (tiny, bundled)** ready" in status_text(app)
    assert any("bundled demo model" in i.value for i in app.main.info)  # labelled honestly as a demo
    assert app.chat_input[0].disabled is False


def test_send_a_message_and_it_persists_across_reruns(app):
    app.chat_input[0].set_value("Who are you?").run()
    expected = [("user", "Who are you?"), ("assistant", KNOWN_ANSWERS["Who are you?"])]
    assert chat_messages(app) == expected
    app.run()
    assert chat_messages(app) == expected
    app.chat_input[0].set_value("Hello").run()
    assert chat_messages(app) == expected + [("user", "Hello"), ("assistant", KNOWN_ANSWERS["Hello"])]


def test_switch_model_shows_the_new_one_and_keeps_the_conversation(app):
    app.chat_input[0].set_value("Hello").run()
    app.selectbox(key="model_choice").select(RANDOM_MODEL_ID).run()
    app.button(key="load_model").click().run()
    run_until(app, f"{RANDOM_MODEL_NAME}** ready")
    assert not [i for i in app.main.info if "bundled demo model" in i.value]  # the demo banner went with the demo
    assert any("was held with **Demo MoE" in i.value for i in app.main.info)  # and the page says so
    assert chat_messages(app)[:2] == [("user", "Hello"), ("assistant", KNOWN_ANSWERS["Hello"])]


def test_a_message_sent_after_another_session_unloaded_the_model_is_given_back(app):
    other = open_page()  # another tab unloads the model while this page still shows it ready
    other.button(key="unload_model").click().run()
    assert "No model loaded" in status_text(other)
    app.chat_input[0].set_value("Hello there").run()
    assert chat_messages(app) == []  # nothing sent, nothing half-recorded
    assert any("No model is loaded (load one in the sidebar): your message was not sent" in w.value
               for w in app.main.warning)
    assert [c.value for c in app.main.code] == ["Hello there"]  # the text, to copy
    assert app.chat_input[0].placeholder == "Load a model in the sidebar to chat"


def test_clear_empties_the_history(app):
    app.chat_input[0].set_value("Hello").run()
    assert len(app.chat_message) == 2
    app.button(key="clear_conversation").click().run()
    assert len(app.chat_message) == 0
    assert app.session_state["messages"] == []


def test_memory_panel_shows_process_and_system_ram(app):
    import re

    import psutil

    captions = " ".join(c.value for c in app.sidebar.caption)
    assert "No CUDA GPU: the model runs on the CPU." in captions

    def gib(shown: str) -> float:  # "1.2 GiB" or "512 MiB", as the panel writes sizes
        number, unit = shown.split()
        return float(number) / (1024 if unit == "MiB" else 1)

    size = r"[\d.]+ [GM]iB"
    resident = gib(re.search(rf"this process: ({size}) resident", captions).group(1))
    rss = psutil.Process().memory_info().rss / 2**30  # the page runs in this process, the demo loaded
    assert 0.5 * rss <= resident <= 1.5 * rss, (resident, rss)
    ram = next(p.proto for p in app.sidebar.get("progress") if p.proto.text.startswith("RAM:"))
    used, total = (gib(x) for x in re.fullmatch(rf"RAM: ({size}) / ({size})", ram.text).groups())
    assert abs(total - psutil.virtual_memory().total / 2**30) < 0.1 and 0 < used < total
    assert abs(ram.value / 100 - used / total) < 0.05  # the bar is as full as the numbers say


def test_load_error_is_shown_and_the_page_keeps_working(app, tmp_path):
    import torch
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"))  # intact files, unknown model
    app.sidebar.text_input(key="local_folder_input").input(str(tmp_path))
    app.button(key="add_local_folder").click().run()
    assert app.selectbox(key="model_choice").value == f"local:{tmp_path.resolve()}"
    app.button(key="load_model").click().run()
    run_until(app, "failed to load")
    app.selectbox(key="model_choice").select("demo-moe").run()
    app.button(key="load_model").click().run()
    run_until(app, "Demo MoE (tiny, bundled)** ready")
    app.chat_input[0].set_value("Hello").run()
    assert chat_messages(app)[-1] == ("assistant", KNOWN_ANSWERS["Hello"])


def test_xverse_base_model_chats_in_its_format_and_is_labelled_base(app):
    app.selectbox(key="model_choice").select(XVERSE_MODEL_ID).run()
    assert any("Base model" in c.value for c in app.sidebar.caption)
    app.button(key="load_model").click().run()
    run_until(app, "Tiny XVERSE** ready")
    assert any("is a base model" in w.value for w in app.main.warning)
    app.chat_input[0].set_value("Hello").run()
    roles = [m.name for m in app.chat_message]
    assert roles == ["user", "assistant"] and not app.main.error
