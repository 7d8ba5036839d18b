"""Check a checkpoint folder's files before anything is unloaded: cheap, reads headers only.

A truncated or missing shard found here leaves the current model serving; found by `from_pretrained`
half way through a load, it would leave no model at all.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from common.errors import ModelLoadError

INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLES = ("model.safetensors", "pytorch_model.bin")
REFETCH = "Delete it and press Load again to fetch it again (or copy it again into the folder)."


def weight_files(folder: Path) -> list[Path]:
    """The weight files a load of `folder` reads (raises when one is missing or the index is unreadable)."""
    for index in INDEXES:
        path = folder / index
        if path.is_file():
            try:
                shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ModelLoadError(f"{path} is not a valid weight index ({type(exc).__name__}: {exc}). "
                                     f"{REFETCH}") from exc
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise ModelLoadError(f"{len(missing)} of the {len(shards)} weight files listed in {index} are "
                                     f"missing from {folder} (first: {missing[0]}). The download is incomplete or "
                                     "files were deleted: press Load again to fetch them, or copy them into the "
                                     "folder.")
            return [folder / s for s in shards]
    for single in SINGLES:
        if (folder / single).is_file():
            return [folder / single]
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return found
    raise ModelLoadError(f"No weights in {folder}: expected model.safetensors, pytorch_model.bin or an index of "
                         "shards next to config.json. Press Load to download them, or copy them into the folder.")


def check_safetensors(path: Path) -> None:
    """The header parses and the file holds every byte it declares (catches truncation and junk)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _broken(path, f"it is {size} bytes long, too short for a safetensors file")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100 * 2**20):
            raise _broken(path, "its header is unreadable (not a safetensors file, or cut short)")
        try:
            header = json.loads(f.read(header_len))
        except ValueError as exc:
            raise _broken(path, f"its header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _broken(path, "its header is not a table of tensors")
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
            and "data_offsets" in t]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        raise _broken(path, f"it is cut short: {size:,} of {expected:,} bytes")


def check_torch_zip(path: Path) -> None:
    """A torch .bin saved since torch 1.6 is a zip: its directory sits at the end, so truncation shows."""
    with path.open("rb") as f:
        if f.read(2) != b"PK":
            return  # the legacy pickle format: left to the loader
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _broken(path, f"it is not a complete archive ({exc})") from exc


def _broken(path: Path, why: str) -> ModelLoadError:
    return ModelLoadError(f"The weight file {path.name} in {path.parent} is damaged: {why}. {REFETCH}")


def read_config(path: Path) -> dict:
    """A config.json's content; a missing or broken one is a `ModelLoadError` with what to do."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is missing or not valid JSON ({type(exc).__name__}). {REFETCH}") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path} is not a JSON object. {REFETCH}")
    return config


def verify_checkpoint(folder: Path) -> None:
    """Raise `ModelLoadError` with advice if `folder`'s config or weight files cannot load."""
    read_config(folder / "config.json")
    for path in weight_files(folder):
        if path.suffix == ".safetensors":
            check_safetensors(path)
        elif path.suffix == ".bin":
            check_torch_zip(path)
