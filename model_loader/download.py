"""Turn a registry row into a local checkpoint folder: a local path, or a hub download."""

from __future__ import annotations

from pathlib import Path

from model_loader.errors import ModelNotFoundError
from model_loader.registry import ModelSpec
from model_loader.settings import Settings

# Files that loading never reads: other weight formats and repository extras.
IGNORE_PATTERNS = ["*.gguf", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.ot", "*.tflite",
                   "*.mlmodel", "original/*", "onnx/*", "*.png", "*.jpg", "*.pdf", "*.mp4"]


def model_dir(spec: ModelSpec, settings: Settings) -> Path:
    """The local folder holding `spec`'s checkpoint, downloading it first if needed."""
    if spec.source == "local":
        assert spec.path is not None  # the registry guarantees a path for local rows
        if not (spec.path / "config.json").is_file():
            raise ModelNotFoundError(f"No checkpoint at {spec.path} (config.json missing): check the folder.")
        return spec.path
    if spec.source == "modelscope":
        return _from_modelscope(spec.modelscope_id or "", settings)
    return _from_huggingface(spec.hf_id or "", settings)


def _from_modelscope(repo: str, settings: Settings) -> Path:
    from modelscope import snapshot_download

    try:
        return Path(snapshot_download(repo, cache_dir=str(settings.cache_dir), ignore_patterns=IGNORE_PATTERNS))
    except Exception as exc:  # modelscope raises many types; translate them once, here
        raise ModelNotFoundError(
            f"Could not download {repo} from ModelScope into {settings.cache_dir}: {exc}. "
            "Check the network (or MODELSCOPE_ENDPOINT) and the model id, or point a local row at the files."
        ) from exc


def _from_huggingface(repo: str, settings: Settings) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, cache_dir=str(settings.cache_dir / "huggingface"),
                                      ignore_patterns=IGNORE_PATTERNS))
    except Exception as exc:
        raise ModelNotFoundError(
            f"Could not download {repo} from the Hugging Face hub: {exc}. "
            "Check the network, HF_ENDPOINT (for a mirror) and the model id."
        ) from exc
