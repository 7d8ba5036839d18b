"""Turn a registry row into a local checkpoint folder: a local path, or a hub download of only what loading reads."""

from __future__ import annotations

import fnmatch
import glob
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from common.errors import DownloadCancelled, ModelLoadError, ModelNotFoundError, MoEChatError, one_line
from common.settings import Settings
from model_loader.checkpoint_check import weight_files
from model_loader.disk import check_room
from model_loader.download_progress import DownloadAborted, DownloadProgress, ProgressTracker
from model_loader.registry import ModelSpec, is_folder_ref

__all__ = ["DownloadCancelled", "DownloadProgress", "model_dir", "select_files", "tokenizer_dir"]

log = logging.getLogger(__name__)

# What loading reads besides the weights, at the top of the repository (sub-folders hold other formats).
NEEDED = ("config.json", "generation_config.json", "tokenizer*.json", "tokenizer*.model", "special_tokens_map.json",
          "added_tokens.json", "vocab*.json", "vocab*.txt", "merges*.txt", "chat_template*.jinja",
          "chat_template*.json", "spiece.model", "sentencepiece*.model", "*.tiktoken")
REMOTE_CODE = ("*.py",)  # only rows with trust_remote_code run the repository's own code
# Weight formats, preferred first: (single file, index of shards, shard names).
WEIGHTS = (("model.safetensors", "model.safetensors.index.json", "model-*.safetensors"),
           ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"))
MARKERS = ".moe-chat/complete"  # under the cache dir: one record per finished download



def select_files(paths: Iterable[str], remote_code: bool = False, weights: bool = True) -> list[str]:
    """The files of a repository that loading needs: config, tokenizer, and one weight format (unless not
    `weights`: then the tokenizer's files, config.json and generation_config.json alone)."""
    top = [p for p in paths if "/" not in p]
    wanted = NEEDED + (REMOTE_CODE if remote_code else ())
    keep = {p for p in top if any(fnmatch.fnmatchcase(p, pattern) for pattern in wanted)}
    return sorted(keep | set(_weights(top) if weights else ()))


def _weights(top: list[str]) -> list[str]:
    for single, index, shards in WEIGHTS:
        if index in top:
            return [index, *(p for p in top if fnmatch.fnmatchcase(p, shards))]
        if single in top:
            return [single]
    return [p for p in top if p.endswith(".safetensors")]  # unusual names: any safetensors, never .bin/.pt


def model_dir(spec: ModelSpec, settings: Settings, on_progress: Callable[[DownloadProgress], None] | None = None,
              cancel: threading.Event | None = None) -> Path:
    """The local folder holding `spec`'s checkpoint, downloading it first if needed.

    A hub download fetches only what loading reads (see `select_files`) into `settings.cache_dir` and
    returns the folder the hub client returns. A copy that an earlier call finished is returned without
    touching the network; a copy made otherwise is used when the network fails. Interrupted downloads
    resume (ModelScope resumes partial files too; huggingface_hub 2.4 restarts the unfinished ones).
    `on_progress` gets throttled `DownloadProgress` reports from worker threads; setting `cancel`
    abandons the download with `DownloadCancelled`. Other failures raise `ModelNotFoundError`.
    """
    if spec.source == "local":
        assert spec.path is not None  # the registry guarantees a path for local rows
        if not (spec.path / "config.json").is_file():
            raise ModelNotFoundError(f"No checkpoint at {spec.path} (config.json missing): point the row's path "
                                     "at the folder that holds config.json and the weights.")
        return spec.path
    hub = HUBS[spec.source]
    repo = getattr(spec, hub.id_field) or ""
    return _fetch(hub, repo, spec.trust_remote_code, settings, _marker(spec, settings), on_progress, cancel)


def _marker(spec: ModelSpec, settings: Settings) -> Path:
    repo = getattr(spec, HUBS[spec.source].id_field) or ""
    return settings.cache_dir / MARKERS / f"{spec.source}--{repo.replace('/', '--')}.json"


def is_downloaded(spec: ModelSpec, settings: Settings) -> bool:
    """Whether an earlier call finished downloading `spec` into the cache (never touches the network)."""
    return spec.source in HUBS and _read_marker(_marker(spec, settings)) is not None


def tokenizer_dir(ref: str, settings: Settings, on_progress: Callable[[DownloadProgress], None] | None = None,
                  cancel: threading.Event | None = None, remote_code: bool = False) -> Path:
    """The local folder of the tokenizer a server row names: a folder, or a hub repository ("org/name" on
    ModelScope, "hf:org/name" on Hugging Face) of which only the tokenizer files, config.json and
    generation_config.json are fetched (and its code, for a row with trust_remote_code)."""
    if is_folder_ref(ref):
        folder = Path(ref).expanduser()
        if not folder.is_dir():
            raise ModelNotFoundError(f"The tokenizer folder {folder} does not exist: fix the row's tokenizer field "
                                     "or remove it (token counts are then estimated).")
        return folder
    source, repo = ("huggingface", ref[3:]) if ref.startswith("hf:") else ("modelscope", ref.removeprefix("ms:"))
    hub = HUBS[source]
    marker = settings.cache_dir / MARKERS / f"{source}--{repo.replace('/', '--')}--tokenizer.json"
    return _fetch(hub, repo, remote_code, settings, marker, on_progress, cancel, weights=False)


@dataclass(frozen=True)
class Hub:
    """One hub client, behind the same four calls."""

    name: str
    env: str  # the endpoint variable the client itself reads
    id_field: str  # the ModelSpec field naming the repository
    cache_subdir: str
    kept: str  # what an interrupted download leaves for the next attempt
    default_endpoint: Callable[[], str]
    list_files: Callable[[str, str | None], dict[str, int]]  # (repo, endpoint) -> {path: size}
    snapshot: Callable[[str, Path, str | None, list[str] | None, ProgressTracker | None], Path]
    local_snapshot: Callable[[str, Path, list[str] | None], Path | None]  # never touches the network
    is_missing: Callable[[BaseException], bool]


def _fetch(hub: Hub, repo: str, remote_code: bool, settings: Settings, marker: Path,
           on_progress: Callable[[DownloadProgress], None] | None, cancel: threading.Event | None,
           weights: bool = True) -> Path:
    cache = settings.cache_dir / hub.cache_subdir
    # Read per call and passed explicitly: both clients copy their endpoint variable into module state
    # when first used, so a change after that would otherwise be ignored.
    endpoint = os.environ.get(hub.env) or None
    finished = _read_marker(marker)
    local = hub.local_snapshot(repo, cache, list(finished) if finished else None)
    if local is not None and finished and _has_files(local, finished):
        log.info("using the cached copy of %s in %s", repo, local)
        return local
    if cancel is not None and cancel.is_set():
        raise DownloadCancelled(f"The download of {repo} was cancelled.")
    shown = endpoint or hub.default_endpoint()
    try:
        sizes = hub.list_files(repo, endpoint)
        wanted = {name: sizes[name] for name in select_files(sizes, remote_code, weights)}
        if weights and not _weights(list(wanted)):
            raise ModelNotFoundError(f"{repo} on {hub.name} has no weights transformers can load (model*.safetensors "
                                     "or pytorch_model*.bin at the top of the repository): choose another model.")
        tracker = ProgressTracker(on_progress, cancel, wanted)
        for name, size in wanted.items():
            if local is not None and _has_files(local, {name: size}):
                tracker.already_have(name)  # clients skip cached files without a word
        missing = sum(_missing_bytes(local, name, size) for name, size in wanted.items())
        if missing:  # refused before the first byte, rather than failing late with a full disk
            check_room(missing, cache, f"Downloading {repo}")
        log.info("downloading %d files of %s from %s", len(wanted), repo, shown)
        path = hub.snapshot(repo, cache, endpoint, list(wanted), tracker)
    except DownloadAborted:
        raise DownloadCancelled(f"The download of {repo} was cancelled: {hub.kept}.") from None
    except MoEChatError:
        raise
    except Exception as exc:  # the clients raise many types; translated once, here
        if not hub.is_missing(exc) and local is not None and _looks_loadable(local):
            log.warning("%s unreachable (%s); using the cached copy in %s", hub.name, _reason(exc), local)
            return local
        raise ModelNotFoundError(_advice(hub, repo, shown, exc)) from exc
    tracker.finish()
    _write_marker(marker, wanted)
    return path


def _advice(hub: Hub, repo: str, endpoint: str, exc: BaseException) -> str:
    if hub.is_missing(exc):
        return (f"{hub.name} at {endpoint} has no model {repo!r} (or it is private). Check the row's {hub.id_field} "
                f"(and {hub.env} if you use a mirror), or add a local folder row that holds the files.")
    return (f"Could not download {repo} from {hub.name} at {endpoint} ({_reason(exc)}). Check the network and "
            f"{hub.env} (now {os.environ.get(hub.env) or 'unset'}) and try again: {hub.kept}. Or add a local "
            "folder row that holds the files.")


def _reason(exc: BaseException) -> str:
    return one_line(exc, 120)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def _has_files(folder: Path, sizes: dict[str, int]) -> bool:
    return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in sizes.items())


def _missing_bytes(folder: Path | None, name: str, size: int) -> int:
    """What is still to fetch of one file: nothing when complete, the rest of a partial one ModelScope resumes."""
    if folder is None:
        return size
    if _has_files(folder, {name: size}):
        return 0
    partial = folder / f"{name}.incomplete"
    return max(0, size - partial.stat().st_size) if partial.is_file() else size


def _looks_loadable(folder: Path) -> bool:
    """A copy made by other means (or an older run): config, every weight shard, and no partial file."""
    if not (folder / "config.json").is_file() or any(p.name.endswith(".incomplete") for p in folder.iterdir()):
        return False
    try:
        weight_files(folder)  # raises when a shard the index lists is missing, or there are no weights
    except ModelLoadError:
        return False
    return True


def _read_marker(marker: Path) -> dict[str, int] | None:
    try:
        return {str(k): int(v) for k, v in json.loads(marker.read_text())["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_marker(marker: Path, files: dict[str, int]) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"files": files}, indent=1))
        tmp.replace(marker)
    except OSError as exc:  # only costs a network check next time
        log.warning("could not record the finished download in %s: %s", marker, exc)


def _patterns(files: list[str] | None) -> list[str] | None:
    return None if files is None else [glob.escape(f) for f in files]  # exact names, even with [ or *


# --- ModelScope -----------------------------------------------------------------------------------------------------

def _ms_list(repo: str, endpoint: str | None) -> dict[str, int]:
    from modelscope.hub.api import HubApi

    return {f["Path"]: int(f.get("Size") or 0) for f in HubApi(endpoint=endpoint).get_model_files(repo)}


def _ms_snapshot(repo: str, cache: Path, endpoint: str | None, files: list[str] | None,
                 tracker: ProgressTracker | None, local_only: bool = False) -> Path:
    from modelscope import snapshot_download
    from modelscope.hub.callback import ProgressCallback

    class Callback(ProgressCallback):
        """Instantiated per file by the client's worker threads."""

        def __init__(self, filename: str, file_size: int) -> None:
            super().__init__(filename, file_size)
            tracker.start(filename)

        def update(self, size: int) -> None:
            tracker.add(self.filename, size)

        def end(self) -> None:
            tracker.end(self.filename)

    return Path(snapshot_download(repo, cache_dir=str(cache), endpoint=endpoint, allow_patterns=_patterns(files),
                                  local_files_only=local_only, progress_callbacks=[Callback] if tracker else None))


def _ms_local(repo: str, cache: Path, files: list[str] | None) -> Path | None:
    try:  # any non-empty snapshot folder: the client does not know whether it is complete
        return _ms_snapshot(repo, cache, None, files, None, local_only=True)
    except Exception:
        return None


def _ms_missing(exc: BaseException) -> bool:
    from modelscope_hub.errors import NotExistError

    return any(isinstance(e, NotExistError) or getattr(getattr(e, "response", None), "status_code", None) == 404
               for e in _chain(exc))


# --- Hugging Face ---------------------------------------------------------------------------------------------------

def _hf_list(repo: str, endpoint: str | None) -> dict[str, int]:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    tree = HfApi(endpoint=endpoint).list_repo_tree(repo, recursive=True)
    return {f.path: int(f.size or 0) for f in tree if isinstance(f, RepoFile)}


class _NullWriter:
    """Where the progress bars handed to huggingface_hub draw: nowhere."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _hf_snapshot(repo: str, cache: Path, endpoint: str | None, files: list[str] | None,
                 tracker: ProgressTracker | None, local_only: bool = False) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Bar(hf_tqdm):
        """snapshot_download's summed byte bar feeds the tracker; its file-count bar counts finished files."""

        def __init__(self, *args, **kwargs) -> None:
            name = kwargs.pop("name", None)
            self._role = ("bytes" if name == "huggingface_hub.snapshot_download"
                          else "files" if name is None and kwargs.get("unit", "it") == "it" else None)
            # Drawn nowhere but left enabled: the client reads attributes a disabled tqdm lacks.
            super().__init__(*args, **{**kwargs, "disable": False, "file": _NullWriter()})

        def update(self, n: float | None = 1) -> bool | None:
            if self._role == "bytes":
                tracker.add(None, int(n or 0))
            elif self._role == "files":
                tracker.end(None)
            return super().update(n)

    return Path(snapshot_download(repo, cache_dir=str(cache), endpoint=endpoint, allow_patterns=_patterns(files),
                                  local_files_only=local_only, tqdm_class=Bar if tracker else None))


def _hf_local(repo: str, cache: Path, files: list[str] | None) -> Path | None:
    from huggingface_hub.errors import IncompleteSnapshotError

    try:
        return _hf_snapshot(repo, cache, None, files, None, local_only=True)
    except IncompleteSnapshotError as exc:  # the folder exists but misses files: still worth counting what is there
        return Path(exc.snapshot_path)
    except Exception:
        return None


def _hf_missing(exc: BaseException) -> bool:
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    return any(isinstance(e, (RepositoryNotFoundError, RevisionNotFoundError)) for e in _chain(exc))


def _ms_default_endpoint() -> str:
    from modelscope_hub.constants import DEFAULT_ENDPOINT

    return DEFAULT_ENDPOINT


def _hf_default_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


HUBS: dict[str, Hub] = {
    "modelscope": Hub("ModelScope", "MODELSCOPE_ENDPOINT", "modelscope_id", "",
                      "the files fetched so far, partial ones included, stay on disk and the next attempt resumes "
                      "from them",
                      _ms_default_endpoint, _ms_list, _ms_snapshot, _ms_local, _ms_missing),
    "huggingface": Hub("Hugging Face", "HF_ENDPOINT", "hf_id", "huggingface",
                       "finished files stay on disk and the next attempt skips them (huggingface_hub restarts "
                       "unfinished ones)",
                       _hf_default_endpoint, _hf_list, _hf_snapshot, _hf_local, _hf_missing),
}
