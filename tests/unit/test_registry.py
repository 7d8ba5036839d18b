"""The model registry is data: built-in rows, user rows from TOML, local folders, clear errors."""

from __future__ import annotations

import pytest

from common.errors import RegistryError
from model_loader.registry import load_registry


def test_builtin_rows():
    reg = load_registry(None)
    assert reg.ids[:5] == ["demo-moe", "qwen1.5-moe-a2.7b-chat", "xverse-moe-a4.2b", "xverse-moe-a4.2b-chat",
                           "qwen1.5-moe-a2.7b-chat-gptq-int4"]
    gptq = reg.get("qwen1.5-moe-a2.7b-chat-gptq-int4")
    assert gptq.modelscope_id == "qwen/Qwen1.5-MoE-A2.7B-Chat-GPTQ-Int4" and "requirements-gptq.txt" in gptq.notes
    qwen = reg.get("qwen1.5-moe-a2.7b-chat")
    assert (qwen.source, qwen.modelscope_id, qwen.hf_id) == ("modelscope", "qwen/Qwen1.5-MoE-A2.7B-Chat",
                                                             "Qwen/Qwen1.5-MoE-A2.7B-Chat")
    assert qwen.chat_template is None  # Qwen's tokenizer carries its own template
    assert reg.get("xverse-moe-a4.2b").kind == "base"
    assert "assistant: " in reg.get("xverse-moe-a4.2b").chat_template
    demo = reg.get("demo-moe")
    assert demo.kind == "demo" and demo.preload and (demo.path / "config.json").is_file()


def test_default_model_is_the_demo_without_gpu_and_a_real_model_with_one():
    reg = load_registry(None)
    assert reg.default_id(has_gpu=False) == "demo-moe"
    assert reg.default_id(has_gpu=True) == "qwen1.5-moe-a2.7b-chat"
    assert reg.default_id(has_gpu=False, preferred="xverse-moe-a4.2b") == "xverse-moe-a4.2b"
    with pytest.raises(RegistryError, match="Unknown model id 'nope'"):
        reg.default_id(has_gpu=False, preferred="nope")


def test_user_file_adds_and_replaces_rows(tmp_path):
    (tmp_path / "weights").mkdir()
    user = tmp_path / "models.toml"
    user.write_text(
        '[[models]]\nid = "mine"\nname = "My MoE"\nsource = "local"\npath = "weights"\n'
        '[models.generation]\ntemperature = 0.3\n'
        '[[models]]\nid = "qwen1.5-moe-a2.7b-chat"\nname = "Qwen from HF"\nsource = "huggingface"\n'
        'hf_id = "Qwen/Qwen1.5-MoE-A2.7B-Chat"\nchat_format = "xverse-moe"\n'
    )
    reg = load_registry(user)
    mine = reg.get("mine")
    assert mine.path == (tmp_path / "weights").resolve()  # relative to the file that names it
    assert dict(mine.generation) == {"temperature": 0.3}
    replaced = reg.get("qwen1.5-moe-a2.7b-chat")
    assert replaced.name == "Qwen from HF" and replaced.source == "huggingface"
    assert replaced.chat_template == reg.get("xverse-moe-a4.2b").chat_template  # built-in formats are shared
    assert reg.ids.count("qwen1.5-moe-a2.7b-chat") == 1


@pytest.mark.parametrize("row, message", [
    ('id = "x"\nname = "X"\nsource = "local"\npath = "."\ncolour = "red"', "unknown fields \\['colour'\\]"),
    ('id = "x"\nname = "X"\nsource = "ftp"', "source must be one of"),
    ('id = "x"\nname = "X"\nsource = "modelscope"', "needs the field 'modelscope_id'"),
    ('id = "x"\nsource = "local"\npath = "."', "lacks the field 'name'"),
    ('id = "x"\nname = "X"\nsource = "local"\npath = "."\nchat_format = "nope"', "chat_format 'nope' is not defined"),
])
def test_bad_rows_are_refused_with_the_reason(tmp_path, row, message):
    user = tmp_path / "models.toml"
    user.write_text("[[models]]\n" + row + "\n")
    with pytest.raises(RegistryError, match=message):
        load_registry(user)


def test_broken_toml_names_the_file(tmp_path):
    user = tmp_path / "models.toml"
    user.write_text("[[models]\n")
    with pytest.raises(RegistryError, match="models.toml"):
        load_registry(user)


def test_local_folder_typed_in_the_sidebar(tmp_path):
    reg = load_registry(None)
    roots = (tmp_path,)
    with pytest.raises(RegistryError, match="cannot be read"):
        reg.with_local_folder(tmp_path / "missing", roots)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RegistryError, match="not a folder"):
        reg.with_local_folder(tmp_path / "file", roots)
    with pytest.raises(RegistryError, match="no config.json"):
        reg.with_local_folder(tmp_path, roots)
    (tmp_path / "config.json").write_text("{}")
    reg2, spec = reg.with_local_folder(str(tmp_path), roots)
    assert spec.source == "local" and spec.path == tmp_path.resolve() and spec.id in reg2.ids
    reg3, again = reg2.with_local_folder(tmp_path, roots)
    assert again == spec and len(reg3.specs) == len(reg2.specs)


@pytest.mark.parametrize("make, typed, message", [
    (lambda d: None, "/etc", "accepted only under"),  # outside the roots: refused before the file system is read
    (lambda d: (d / "loop").symlink_to(d / "loop"), "{d}/loop", "cannot be read"),
    (lambda d: (d / "out").symlink_to("/etc"), "{d}/out", "accepted only under"),  # a link out of the roots
    (lambda d: None, "{d}/a\x00b", "not a folder path"),
    (lambda d: None, "{d}/" + "x" * 5000, "not a folder path"),
    (lambda d: None, "{d}/" + "x" * 300, "cannot be read"),  # a name longer than the file system allows
    (lambda d: None, "relative/folder", "accepted only under"),
    (lambda d: (d / "big").mkdir() or (d / "big" / "config.json").write_bytes(b" " * (2 << 20)), "{d}/big",
     "larger than 1 MiB"),
])
def test_the_folder_box_refuses_with_a_message_and_never_raises_anything_else(tmp_path, make, typed, message):
    make(tmp_path)
    with pytest.raises(RegistryError, match=message) as refused:
        load_registry(None).with_local_folder(typed.format(d=tmp_path), (tmp_path,))
    if message == "accepted only under":
        assert "/etc" not in str(refused.value).replace(str(tmp_path), "")  # the path outside is not echoed


SERVER_ROW = '[[models]]\nid = "qwen-vllm"\nname = "Qwen on vLLM"\nsource = "openai"\n'


def test_server_rows_name_the_address_the_served_model_and_the_keys_variable(tmp_path):
    user = tmp_path / "models.toml"
    (tmp_path / "tok").mkdir()
    user.write_text(SERVER_ROW + 'base_url = "http://10.0.0.5:8000"\nmodel = "Qwen/Qwen1.5-MoE-A2.7B-Chat"\n'
                    'api_key_env = "VLLM_API_KEY"\ntokenizer = "./tok"\ncontext = 8192\nmax_concurrent = 4\n')
    spec = load_registry(user).get("qwen-vllm")
    assert spec.remote and spec.backend == "openai" and spec.base_url == "http://10.0.0.5:8000/v1"
    assert (spec.model, spec.api_key_env, spec.context, spec.max_concurrent) == (
        "Qwen/Qwen1.5-MoE-A2.7B-Chat", "VLLM_API_KEY", 8192, 4)
    assert spec.tokenizer == str((tmp_path / "tok").resolve()) and spec.server == "auto"
    assert spec.where == "Qwen/Qwen1.5-MoE-A2.7B-Chat at http://10.0.0.5:8000/v1"
    assert not load_registry(None).get("demo-moe").remote


@pytest.mark.parametrize(("fields", "message"), [
    ('model = "m"\n', "needs the field 'base_url'"),
    ('base_url = "http://h:8000/v1"\n', "needs the field 'model'"),
    ('base_url = "ftp://h/v1"\nmodel = "m"\n', "is not a server address"),
    ('base_url = "http://h/v1"\nmodel = "m"\napi_key_env = "sk-123abc"\n', "a key itself never goes in this file"),
    ('base_url = "http://h/v1"\nmodel = "m"\napi_key = "sk-123abc"\n', "unknown fields \\['api_key'\\]"),
    ('base_url = "http://h/v1"\nmodel = "m"\ncontext = 0\n', "context must be a positive whole number"),
    ('base_url = "http://h/v1"\nmodel = "m"\nserver = "tgi"\n', "server must be one of"),
])
def test_bad_server_rows_are_refused_with_the_reason(tmp_path, fields, message):
    user = tmp_path / "models.toml"
    user.write_text(SERVER_ROW + fields)
    with pytest.raises(RegistryError, match=message):
        load_registry(user)


def test_a_server_added_in_the_sidebar_becomes_a_row_once():
    reg = load_registry(None)
    key = "MOE_CHAT_SERVER_KEY_MINE"
    reg2, spec = reg.with_server(" http://127.0.0.1:8000/ ", "demo", key)
    assert spec.remote and spec.base_url == "http://127.0.0.1:8000/v1" and spec.api_key_env == key
    assert reg2.with_server("http://127.0.0.1:8000/v1", "demo", key)[0] is reg2
    with pytest.raises(RegistryError, match="not an environment variable name"):
        reg.with_server("http://127.0.0.1:8000", "demo", "sk-secret-key")
    with pytest.raises(RegistryError, match="not a server address"):
        reg.with_server("127.0.0.1:8000", "demo")
    with pytest.raises(RegistryError, match="may not carry a user name or password"):
        reg.with_server("http://me:pw@10.0.0.1:8000", "demo")


@pytest.mark.parametrize("name", ["MOE_CHAT_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "MOE_CHAT_PASSWORD"])
def test_the_sidebar_cannot_send_just_any_variable_to_a_server(name, tmp_path):
    with pytest.raises(RegistryError, match="MOE_CHAT_SERVER_KEY_"):
        load_registry(None).with_server("http://10.0.0.1:8000", "demo", name)
    user = tmp_path / "models.toml"  # a variable a row of the models file names is the operator's choice...
    user.write_text(SERVER_ROW + f'base_url = "http://h/v1"\nmodel = "m"\napi_key_env = "{name}"\n')
    assert load_registry(user).checked_key_env(name, "http://h:80/v1") == name
    with pytest.raises(RegistryError, match="is sent only there"):  # ...for that row's server, and no other
        load_registry(user).with_server("http://10.0.0.1:8000", "demo", name)
