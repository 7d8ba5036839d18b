"""A download that would not fit on the disk is refused before its first byte, with the numbers; a resumed one
counts only what is still missing. On a real small filesystem (a tmpfs), against the local hub."""

from __future__ import annotations

import pytest

from common.errors import DiskSpaceError
from common.settings import Settings
from common.units import gb
from model_loader.disk import disk_room
from model_loader.download import model_dir
from model_loader.registry import ModelSpec
from tests.conftest import HF_REPO, MS_REPO, fill_disk
from tests.support.hub_server import needed_files


def ms_spec() -> ModelSpec:
    return ModelSpec(id="hub-demo", name="Hub demo", source="modelscope", modelscope_id=MS_REPO)


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_download_larger_than_the_free_space_is_refused_before_its_first_byte(hub, small_disk, tmp_path):
    settings = Settings(cache_dir=small_disk / "cache", models_file=tmp_path / "models.toml", device="cpu")
    spec = ModelSpec(id="big", name="Big", source="huggingface", hf_id=HF_REPO)  # 12 MiB of weights, 8 MiB of disk
    need = sum(len(hub.repos[HF_REPO].files[name]) for name in needed_files(hub.repos[HF_REPO]))
    free = disk_room(small_disk).free_bytes
    with pytest.raises(DiskSpaceError) as refused:
        model_dir(spec, settings)
    message = str(refused.value)
    assert f"Downloading {HF_REPO} needs {gb(need)}" in message
    assert f"{gb(free)} free at {small_disk / 'cache' / 'huggingface'}" in message
    assert "set MOE_CHAT_CACHE_DIR to a folder on a larger disk" in message
    assert files_under(small_disk) == []  # nothing written
    assert not [t for t in hub.transfers if t.path.endswith(".safetensors")]  # and no weight byte asked for


def test_a_resumed_download_needs_room_only_for_what_is_missing(hub, small_disk, tmp_path, monkeypatch):
    import modelscope_hub._download

    settings = Settings(cache_dir=small_disk / "cache", models_file=tmp_path / "models.toml", device="cpu")
    weights = len(hub.repos[MS_REPO].files["model.safetensors"])
    monkeypatch.setattr(modelscope_hub._download, "DOWNLOAD_RETRY_TIMES", 0)
    hub.drop_after("model.safetensors", 1 << 20)
    with pytest.raises(Exception, match="next attempt resumes"):
        model_dir(ms_spec(), settings)
    missing = weights - (1 << 20)
    reserve = disk_room(small_disk).reserve_bytes
    fill_disk(small_disk, missing + reserve + (128 << 10))  # room for the rest, not for the whole file again
    assert disk_room(small_disk).free_bytes < weights + reserve

    folder = model_dir(ms_spec(), settings)
    assert (folder / "model.safetensors").read_bytes() == hub.repos[MS_REPO].files["model.safetensors"]
    assert hub.transfers_of("model.safetensors")[-1].range_start == 1 << 20
