"""Hub downloads through the real `modelscope` and `huggingface_hub` clients, against `tests/support/hub_server.py`.

Endpoints: both clients copy their endpoint variable into module state the first time they are used
(modelscope-hub's process-wide `HubConfig`, huggingface_hub's `constants.ENDPOINT` at import), so setting
MODELSCOPE_ENDPOINT / HF_ENDPOINT in a test would not reach them. `model_dir` reads the variables per
call and passes `endpoint=` to every client call, which is what the tests exercise. huggingface_hub also
reads HF_HUB_OFFLINE (set by conftest) into `constants.HF_HUB_OFFLINE`, so the fixture patches that value.

Every cache, the ModelScope config folder and HF_HOME live in tmp_path, and `_loopback_only` makes any
connection outside 127.0.0.1 fail, so no test can reach a real hub.

Two library constants are patched, each where a test needs a failure to be final or fast: modelscope-hub's
per-file retry count (to make a dropped transfer fail the call, as a process killed mid-download would) and
its listing attempts (4 attempts with 1+2+4 s of back-off before a connection error surfaces).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from common.errors import ModelNotFoundError
from model_loader.download import DownloadCancelled, DownloadProgress, model_dir, select_files
from model_loader.registry import ModelSpec
from tests.conftest import BIG, HF_REPO, MS_REPO  # the repositories the hub fixture serves
from tests.support.helpers import KNOWN_ANSWERS
from tests.support.hub_server import needed_files


@pytest.fixture
def hub_settings(tmp_path):
    from common.settings import Settings

    return Settings(cache_dir=tmp_path / "cache", models_file=tmp_path / "models.toml", device="cpu")


@pytest.fixture
def every_report(monkeypatch):
    """Progress reports unthrottled, so the tests see every step."""
    monkeypatch.setattr("model_loader.download_progress.EMIT_INTERVAL_S", 0.0)


@pytest.fixture
def returned_paths(monkeypatch) -> list[str]:
    """What the clients' snapshot_download returned, call by call."""
    import huggingface_hub
    import modelscope

    paths: list[str] = []
    for module in (modelscope, huggingface_hub):
        real = module.snapshot_download

        def spy(*args, _real=real, **kwargs):
            paths.append(_real(*args, **kwargs))
            return paths[-1]

        monkeypatch.setattr(module, "snapshot_download", spy)
    return paths


def ms_spec(repo: str = MS_REPO) -> ModelSpec:
    return ModelSpec(id="demo-ms", name="Demo via ModelScope", source="modelscope", modelscope_id=repo)


def hf_spec(repo: str = HF_REPO) -> ModelSpec:
    return ModelSpec(id="demo-hf", name="Demo via Hugging Face", source="huggingface", hf_id=repo)


def assert_complete_progress(reports: list[DownloadProgress], expected_bytes: int, files: int) -> None:
    assert reports, "no progress was reported"
    done = [r.bytes_done for r in reports]
    assert done == sorted(done), "progress went backwards"
    last = reports[-1]
    assert last.bytes_done == last.bytes_total == expected_bytes
    assert last.fraction == 1.0 and last.files_done == last.files_total == files
    assert all(r.bytes_total == expected_bytes and 0.0 <= r.fraction <= 1.0 for r in reports)


# --- ModelScope ----------------------------------------------------------------------------------------------------

def test_modelscope_progress_reaches_100_percent_and_only_needed_files_come(hub, hub_settings, every_report,
                                                                            returned_paths):
    repo, reports = hub.repos[MS_REPO], []
    folder = model_dir(ms_spec(), hub_settings, on_progress=reports.append)
    wanted = needed_files(repo)
    assert [str(folder)] == returned_paths  # the client's own answer, not a guess
    assert {p.name for p in folder.iterdir()} == wanted
    assert hub.fetched() == wanted  # .bin, .gguf, .onnx, .png, .py, README were never requested
    assert all((folder / name).read_bytes() == repo.files[name] for name in wanted)
    assert_complete_progress(reports, sum(len(repo.files[n]) for n in wanted), len(wanted))
    assert len(reports) > 3


def test_modelscope_resumes_a_dropped_transfer_from_where_it_stopped(hub, hub_settings):
    size = len(hub.repos[MS_REPO].files["model.safetensors"])
    hub.drop_after("model.safetensors", 1 << 20)
    folder = model_dir(ms_spec(), hub_settings)
    first, second = hub.transfers_of("model.safetensors")
    assert first.dropped and first.range_start is None and first.bytes_sent == 1 << 20
    assert second.range_start == first.bytes_sent and second.bytes_sent == size - first.bytes_sent
    assert first.bytes_sent + second.bytes_sent == size  # the rest only, never the whole file twice
    assert (folder / "model.safetensors").read_bytes() == hub.repos[MS_REPO].files["model.safetensors"]


def test_modelscope_resumes_in_a_later_call_after_a_failed_one(hub, hub_settings, monkeypatch):
    import modelscope_hub._download

    monkeypatch.setattr(modelscope_hub._download, "DOWNLOAD_RETRY_TIMES", 0)  # the drop ends the first call
    size = len(hub.repos[MS_REPO].files["model.safetensors"])
    hub.drop_after("model.safetensors", 1 << 20)
    with pytest.raises(ModelNotFoundError, match="next attempt resumes"):
        model_dir(ms_spec(), hub_settings)
    earlier = len(hub.transfers)
    folder = model_dir(ms_spec(), hub_settings)
    first, second = hub.transfers_of("model.safetensors")
    assert second.range_start == first.bytes_sent == 1 << 20 and second.bytes_sent == size - (1 << 20)
    assert [t.path for t in hub.transfers[earlier:]] == ["model.safetensors"]  # finished files stay finished
    assert (folder / "model.safetensors").read_bytes() == hub.repos[MS_REPO].files["model.safetensors"]


def test_modelscope_cancel_keeps_the_partial_file_for_the_next_call(hub, hub_settings, every_report):
    cancel, size = threading.Event(), len(hub.repos[MS_REPO].files["model.safetensors"])

    small = sum(len(data) for name, data in hub.repos[MS_REPO].files.items() if name != "model.safetensors")

    def cancel_mid_weights(progress: DownloadProgress) -> None:
        # once some of the weights have arrived (cancelling before their first byte would leave nothing to resume)
        if progress.current_file == "model.safetensors" and progress.bytes_done > small:
            cancel.set()

    with pytest.raises(DownloadCancelled, match="cancelled: the files fetched so far, partial ones included"):
        model_dir(ms_spec(), hub_settings, on_progress=cancel_mid_weights, cancel=cancel)
    model_dir(ms_spec(), hub_settings)
    resumed = hub.transfers_of("model.safetensors")[-1]
    assert 0 < resumed.range_start < size and resumed.bytes_sent == size - resumed.range_start


def test_a_finished_copy_is_used_with_the_server_stopped(hub, hub_settings, _loopback_only):
    folder = model_dir(ms_spec(), hub_settings)
    hub.stop()
    _loopback_only.clear()
    started = time.perf_counter()
    assert model_dir(ms_spec(), hub_settings) == folder
    assert _loopback_only == [] and time.perf_counter() - started < 1.0  # not even a connection attempt


def test_when_the_network_fails_a_copy_made_otherwise_is_used_and_a_partial_one_is_not(hub, hub_settings,
                                                                                      monkeypatch):
    import modelscope_hub._legacy_api

    monkeypatch.setattr(modelscope_hub._legacy_api, "REPO_TREE_PAGE_MAX_ATTEMPTS", 1)
    folder = model_dir(ms_spec(), hub_settings)
    for record in (hub_settings.cache_dir / ".moe-chat").rglob("*.json"):
        record.unlink()  # as if another tool (or an older app) had downloaded it
    hub.stop()
    assert model_dir(ms_spec(), hub_settings) == folder
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError) as caught:
        model_dir(ms_spec(), hub_settings)
    assert hub.url in str(caught.value) and "MODELSCOPE_ENDPOINT" in str(caught.value)


def test_the_network_down_with_nothing_cached_says_what_to_do(hub, hub_settings, monkeypatch):
    import modelscope_hub._legacy_api

    monkeypatch.setattr(modelscope_hub._legacy_api, "REPO_TREE_PAGE_MAX_ATTEMPTS", 1)
    hub.stop()
    with pytest.raises(ModelNotFoundError) as caught:
        model_dir(ms_spec(), hub_settings)
    message = str(caught.value)
    assert MS_REPO in message and hub.url in message and "MODELSCOPE_ENDPOINT" in message and "network" in message
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize(("spec", "variable"), [(ms_spec("tester/no-such-model"), "MODELSCOPE_ENDPOINT"),
                                                 (hf_spec("tester/no-such-model"), "HF_ENDPOINT")],
                         ids=["modelscope", "huggingface"])
def test_a_missing_repository_is_model_not_found_with_advice(hub, hub_settings, spec, variable):
    with pytest.raises(ModelNotFoundError) as caught:
        model_dir(spec, hub_settings)
    message = str(caught.value)
    assert "tester/no-such-model" in message and hub.url in message and variable in message
    assert "local folder" in message and "\n" not in message and "Traceback" not in message
    assert not hub.fetched()


def test_the_downloaded_demo_loads_and_answers(hub, hub_settings):
    from chat_engine.engine import Engine
    from model_loader.registry import load_registry

    spec = replace(load_registry().get("demo-moe"), id="demo-from-hub", source="modelscope", modelscope_id=MS_REPO,
                   path=None)
    engine = Engine(hub_settings)
    try:
        engine.load(spec)
        assert engine.chat([{"role": "user", "content": "Hello"}]).text() == KNOWN_ANSWERS["Hello"]
    finally:
        engine.close()


# --- Hugging Face --------------------------------------------------------------------------------------------------

def test_huggingface_progress_reaches_100_percent_and_only_needed_files_come(hub, hub_settings, every_report,
                                                                            returned_paths):
    repo, reports = hub.repos[HF_REPO], []
    folder = model_dir(hf_spec(), hub_settings, on_progress=reports.append)
    wanted = needed_files(repo)
    assert [str(folder)] == returned_paths
    assert {p.name for p in folder.iterdir()} == wanted and hub.fetched() == wanted
    assert all((folder / name).read_bytes() == repo.files[name] for name in wanted)
    assert_complete_progress(reports, sum(len(repo.files[n]) for n in wanted), len(wanted))


def test_huggingface_resumes_a_dropped_transfer_within_the_call(hub, hub_settings):
    from huggingface_hub import constants

    hub.drop_after("model.safetensors", 11 << 20)
    folder = model_dir(hf_spec(), hub_settings)
    first, second = hub.transfers_of("model.safetensors")
    kept = first.bytes_sent // constants.DOWNLOAD_CHUNK_SIZE * constants.DOWNLOAD_CHUNK_SIZE  # whole reads only
    assert first.dropped and second.range_start == kept > 0 and second.bytes_sent == len(BIG) - kept
    assert first.bytes_sent + second.bytes_sent < 1.2 * len(BIG)
    assert (folder / "model.safetensors").read_bytes() == BIG


def test_huggingface_restarts_an_abandoned_file_in_the_next_call(hub, hub_settings, every_report):
    """huggingface_hub 2.4 writes each attempt to a uniquely named temp file and deletes it on failure."""
    cancel = threading.Event()
    with pytest.raises(DownloadCancelled):
        model_dir(hf_spec(), hub_settings, on_progress=lambda p: cancel.set() if p.bytes_done > 1 << 20 else None,
                  cancel=cancel)
    folder = model_dir(hf_spec(), hub_settings)
    assert hub.transfers_of("model.safetensors")[-1].range_start is None  # from byte 0 again
    assert (folder / "model.safetensors").read_bytes() == BIG


def test_huggingface_finished_copy_is_used_with_the_server_stopped(hub, hub_settings, _loopback_only):
    folder = model_dir(hf_spec(), hub_settings)
    hub.stop()
    _loopback_only.clear()
    assert model_dir(hf_spec(), hub_settings) == folder and _loopback_only == []


# --- pure parts ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("files", "remote_code", "expected"), [
    (["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
      "model.safetensors.index.json", "consolidated.safetensors", "pytorch_model.bin", "tokenizer.model",
      "tokenizer_config.json", "original/model.pth", "modeling_x.py", "model.gguf"], False,
     ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
      "model.safetensors.index.json", "tokenizer.model", "tokenizer_config.json"]),
    (["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
      "pytorch_model.bin.index.json", "vocab.json", "merges.txt", "training_args.bin", "modeling_x.py"], True,
     ["config.json", "merges.txt", "modeling_x.py", "pytorch_model-00001-of-00002.bin",
      "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json", "vocab.json"]),
    (["config.json", "model.safetensors", "pytorch_model.bin", "chat_template.jinja", "logo.png", "onnx/model.onnx"],
     False, ["chat_template.jinja", "config.json", "model.safetensors"]),
], ids=["sharded-safetensors", "sharded-bin-remote-code", "single-safetensors"])
def test_select_files_takes_config_tokenizer_and_one_weight_format(files, remote_code, expected):
    assert select_files(files, remote_code) == expected


def test_tracker_throttles_holds_monotonic_and_finishes_at_total():
    from model_loader.download_progress import ProgressTracker

    now, reports = [0.0], []
    tracker = ProgressTracker(reports.append, None, {"a": 100, "b": 50}, clock=lambda: now[0])
    tracker.start("a")
    for _ in range(10):
        tracker.add("a", 5)  # ten steps in no time at all: only the first is reported
    now[0] = 1.0
    tracker.add("a", -50)  # a client rewinding a file does not move the bar back
    now[0] = 2.0
    tracker.add("a", 80)
    assert [r.bytes_done for r in reports] == [5, 50, 80]
    assert reports[-1].rate_bytes_per_s == pytest.approx(75 / 2.0) and reports[-1].eta_s == pytest.approx(70 / 37.5)
    tracker.finish()
    assert reports[-1].bytes_done == 150 and reports[-1].fraction == 1.0 and reports[-1].files_done == 2


def test_progress_without_a_total_has_no_fraction_or_eta():
    progress = DownloadProgress(bytes_done=10, bytes_total=None, files_done=0, files_total=3, elapsed_s=2.0)
    assert progress.fraction is None and progress.eta_s is None and progress.rate_bytes_per_s == 5.0



@pytest.mark.parametrize(("ref", "spec"), [(MS_REPO, ms_spec), ("hf:" + HF_REPO, hf_spec)])
def test_a_server_rows_tokenizer_comes_without_the_weights(hub, hub_settings, ref, spec):
    from model_loader.download import tokenizer_dir
    from model_loader.loader import load_tokenizer

    repo = hub.repos[ref.removeprefix("hf:")]
    folder = tokenizer_dir(ref, hub_settings)
    fetched = hub.fetched()
    assert "model.safetensors" not in fetched and {"tokenizer.json", "config.json"} <= fetched
    assert all((folder / name).read_bytes() == repo.files[name] for name in fetched)
    tokenizer = load_tokenizer(spec(), folder)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "Who are you?"}], tokenize=True,
                                         add_generation_prompt=True, return_dict=True)["input_ids"]
    hub.stop()
    assert tokenizer_dir(ref, hub_settings) == folder  # a finished copy is used with the hub gone


def test_a_missing_tokenizer_folder_says_what_to_fix(hub_settings, tmp_path):
    from model_loader.download import tokenizer_dir

    with pytest.raises(ModelNotFoundError, match="tokenizer folder .* does not exist"):
        tokenizer_dir(str(tmp_path / "nope"), hub_settings)
