"""The model registry: rows of `ModelSpec` read from the built-in TOML file and the user's own."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from common.errors import RegistryError

BUILTIN_FILE = Path(__file__).with_name("models.toml")
Source = Literal["modelscope", "huggingface", "local", "openai"]
Kind = Literal["chat", "base", "demo"]
_SOURCES = ("modelscope", "huggingface", "local", "openai")
SERVER_BACKEND = "openai"  # the backend of rows for a model server added in the sidebar
SERVERS = ("auto", "vllm", "sglang", "transformers", "moe-chat", "openai")
_KINDS = ("chat", "base", "demo")


@dataclass(frozen=True)
class ModelSpec:
    """One model the app can load, and the facts the app needs about it."""

    id: str
    name: str
    source: Source
    modelscope_id: str | None = None
    hf_id: str | None = None
    path: Path | None = None
    kind: Kind = "chat"
    gpu_only: bool = False  # too large for CPU: never the default without a GPU
    preload: bool = False  # load at page start when this is the default model
    system_prompt: str | None = None
    chat_template: str | None = None  # used when the tokenizer carries none
    notes: str = ""
    total_params_b: float | None = None
    active_params_b: float | None = None
    trust_remote_code: bool = False
    config: Path | None = None  # a copy of the model's config.json, so it can be planned before any download
    generation: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    backend: str = "transformers"  # who generates: see chat_engine/backends.py ("openai" for source "openai")
    # A model served by an OpenAI-compatible server (source "openai"):
    base_url: str | None = None  # e.g. http://10.0.0.5:8000/v1
    model: str | None = None  # the served model name, as the server's /v1/models lists it
    api_key_env: str | None = None  # the NAME of the environment variable holding the key (never the key)
    tokenizer: str | None = None  # folder, or hub id ("org/name" on ModelScope, "hf:org/name"), for exact counts
    context: int | None = None  # the context window, when the server does not report one
    max_concurrent: int | None = None  # answers this app sends the server at once (None: no limit; it batches)
    server: str = "auto"  # vllm | sglang | transformers | openai: which extra fields it takes (auto: detected)

    @property
    def remote(self) -> bool:
        """True for a model answered by a server, not loaded in this process."""
        return self.source == "openai"

    @property
    def where(self) -> str:
        """Human-readable origin: hub id, folder or server."""
        if self.source == "local":
            return str(self.path)
        if self.remote:
            return f"{self.model} at {self.base_url}"
        return (self.modelscope_id if self.source == "modelscope" else self.hf_id) or "?"


@dataclass(frozen=True)
class Registry:
    """All known models, in display order."""

    specs: tuple[ModelSpec, ...]

    def get(self, model_id: str) -> ModelSpec:
        for spec in self.specs:
            if spec.id == model_id:
                return spec
        known = ", ".join(s.id for s in self.specs)
        raise RegistryError(f"Unknown model id {model_id!r}. Known models: {known}.")

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.specs]

    def default_id(self, has_gpu: bool, preferred: str | None = None) -> str:
        """The preferred id if known, else the first model this machine can run."""
        if preferred:
            return self.get(preferred).id
        for spec in self.specs:
            runnable = spec.kind != "demo" if has_gpu else not spec.gpu_only
            if runnable:
                return spec.id
        return self.specs[0].id

    def with_local_folder(self, folder: str | Path, roots: Sequence[Path] = ()) -> tuple[Registry, ModelSpec]:
        """Add (or reuse) a row for a model folder typed by the user, if it lies under one of `roots`.

        A path outside them is neither resolved nor named back; every failure is a RegistryError with advice.
        """
        path = _checked_folder(str(folder), tuple(roots))
        spec = ModelSpec(id=f"local:{path}", name=f"{path.name} (local)", source="local", path=path,
                         notes=f"Local folder {path}")
        if spec.id in self.ids:
            return self, self.get(spec.id)
        return Registry(self.specs + (spec,)), spec

    def checked_key_env(self, name: str | None, base_url: str) -> str | None:
        """A key variable typed in the sidebar for the server at `base_url`, if a page user may have it sent there:
        one named MOE_CHAT_SERVER_KEY_*, or one a row of the models files names for that very server (its scheme,
        host and port). Any other (MOE_CHAT_API_KEY, HF_TOKEN, cloud credentials, another row's key) could be sent
        to any address a page user types."""
        key_env = (name or "").strip() or None
        if key_env is None:
            return None
        if not _ENV_NAME.fullmatch(key_env):
            raise RegistryError(f"{key_env[:80]!r} is not an environment variable name: give the NAME of the "
                                "variable holding the key (e.g. MOE_CHAT_SERVER_KEY_VLLM), never the key itself.")
        if key_env.startswith(SIDEBAR_KEY_PREFIX):
            return key_env
        rows = [s for s in self.specs if s.api_key_env == key_env]
        if any(_origin(s.base_url or "") == _origin(base_url) for s in rows):
            return key_env
        if rows:
            raise RegistryError(f"{key_env} is the key of the server a row of models.toml names, and is sent only "
                                "there: pick that row instead, or start the app with "
                                f"{SIDEBAR_KEY_PREFIX}<NAME>=<this server's key> and give that name.")
        raise RegistryError(f"From the sidebar, a key may come only from a variable named {SIDEBAR_KEY_PREFIX}"
                            "... or one a row of models.toml names for this server: start the app with "
                            f"{SIDEBAR_KEY_PREFIX}<NAME>=<the server's key> and give that name.")

    def with_server(self, base_url: str, model: str, api_key_env: str | None = None,
                    allowed_hosts: tuple[str, ...] = ()) -> tuple[Registry, ModelSpec]:
        """Add (or reuse) a row for a model served at `base_url` (picked from its /v1/models in the sidebar)."""
        url = checked_server_url(base_url, allowed_hosts)
        key_env = self.checked_key_env(api_key_env, url)
        if not SERVED_MODEL_ID.fullmatch(model or ""):
            raise RegistryError(f"{(model or '')[:80]!r} is not a model name a server lists.")
        spec = ModelSpec(id=f"{ADDED_SERVER_PREFIX}{model}@{url}", name=f"{model} (server)", source="openai",
                         backend=SERVER_BACKEND, base_url=url, model=model, api_key_env=key_env,
                         notes=f"Served by {url}")
        if spec.id in self.ids:
            return self, self.get(spec.id)
        return Registry(self.specs + (spec,)), spec


ADDED_SERVER_PREFIX = "server:"  # the id of a row a page user added from "Add a model server"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(checked_base_url(url) if url else "")
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        port = None
    return parts.scheme, (parts.hostname or "").lower(), port


# What a served model's id may look like to be shown or used: hub ids, paths, tags (vLLM serves "org/name",
# "/models/x", "name:tag"). Anything else a scanned service returns (HTML, JSON, control characters) is not shown.
SERVED_MODEL_ID = re.compile(r"[A-Za-z0-9/_][A-Za-z0-9._:/@+\-]{0,199}")


def checked_server_url(text: str, allowed_hosts: tuple[str, ...] = ()) -> str:
    """`checked_base_url`, and a host MOE_CHAT_SERVER_HOSTS allows (when it names any)."""
    url = checked_base_url(text)
    host = (urlsplit(url).hostname or "").lower()
    if allowed_hosts and host not in allowed_hosts:
        raise RegistryError(f"Model servers can be added only on {', '.join(allowed_hosts)} (MOE_CHAT_SERVER_HOSTS); "
                            f"{host!r} is not one of them.")
    return url


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
SIDEBAR_KEY_PREFIX = "MOE_CHAT_SERVER_KEY_"


def is_folder_ref(ref: str | None) -> bool:
    """True when a `tokenizer` value names a folder rather than a hub id."""
    return bool(ref) and ref.startswith(("/", "./", "../", "~"))


def checked_base_url(text: str) -> str:
    """An http(s) server address, normalised to end in /v1 (the form OpenAI clients take)."""
    url = text.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2048:
        raise RegistryError(f"{text.strip()[:200]!r} is not a server address: give one like http://10.0.0.5:8000/v1.")
    if parts.username or parts.password:
        raise RegistryError("A server address may not carry a user name or password (it is shown and logged): put "
                            "the key in an environment variable and name it in api_key_env.")
    if parts.query or parts.fragment or "?" in url or "#" in url or not _URL_PART.fullmatch(parts.netloc + parts.path):
        raise RegistryError(f"{text.strip()[:200]!r} is not a server address: it may hold only the host, port and a "
                            "path of letters, digits and . _ ~ - / (like http://10.0.0.5:8000/v1).")
    return url if parts.path.endswith("/v1") else url + "/v1"


# What an address may hold, as it is shown to every user of the page: no Markdown, no spaces, no query.
_URL_PART = re.compile(r"[A-Za-z0-9.\-_~:\[\]/%]+")


MAX_PATH_CHARS = 4096
MAX_CONFIG_BYTES = 1 << 20  # a real config.json is a few KiB


def _under(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _checked_folder(text: str, roots: tuple[Path, ...]) -> Path:
    """The resolved folder `text` names, if it is a readable checkpoint folder under `roots`."""
    roots = tuple(Path(os.path.abspath(os.path.normpath(Path(r).expanduser()))) for r in roots)
    allowed = ", ".join(str(r) for r in roots) or "nowhere"
    outside = RegistryError(f"Model folders are accepted only under {allowed}. Copy or link the model there, or "
                            "list more folders in MOE_CHAT_MODEL_ROOTS.")
    if not text.strip() or "\x00" in text or len(text) > MAX_PATH_CHARS:
        raise RegistryError("That is not a folder path: type the full path of the folder that holds config.json.")
    try:
        lexical = Path(os.path.normpath(Path(text).expanduser()))
        if not lexical.is_absolute() or not _under(lexical, roots):
            raise outside  # refused before the file system is touched: nothing about the path is revealed
        resolved = lexical.resolve(strict=True)
        if not _under(resolved, tuple(r.resolve() for r in roots)):
            raise outside  # a link pointing out of the allowed folders
        if not resolved.is_dir():
            raise RegistryError(f"{lexical} is not a folder. Give the folder that holds config.json.")
        config = resolved / "config.json"
        if not config.is_file():
            raise RegistryError(f"{lexical} has no config.json: give the folder of a transformers checkpoint.")
        if config.stat().st_size > MAX_CONFIG_BYTES:
            raise RegistryError(f"{lexical}/config.json is larger than 1 MiB: that is not a model's config.json.")
    except RegistryError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:  # missing, permission denied, a symlink loop, a bad name
        raise RegistryError(f"The folder {text.strip()[:200]} cannot be read ({type(exc).__name__}): check that it "
                            "exists and that the app's user may read it.") from None
    return resolved


_FIELDS = {f.name for f in fields(ModelSpec)}


def _spec_from_row(row: dict[str, Any], base_dir: Path, formats: Mapping[str, str], origin: Path) -> ModelSpec:
    where = f"{origin}: model {row.get('id', '?')!r}"
    unknown = set(row) - _FIELDS - {"chat_format"}
    if unknown:
        raise RegistryError(f"{where} has unknown fields {sorted(unknown)}; allowed: {sorted(_FIELDS)}.")
    for required in ("id", "name", "source"):
        if not row.get(required):
            raise RegistryError(f"{where} lacks the field {required!r}.")
    row = dict(row)
    if row["source"] not in _SOURCES:
        raise RegistryError(f"{where}: source must be one of {_SOURCES}, not {row['source']!r}.")
    if row.get("kind", "chat") not in _KINDS:
        raise RegistryError(f"{where}: kind must be one of {_KINDS}, not {row['kind']!r}.")
    fmt = row.pop("chat_format", None)
    if fmt is not None:
        if fmt not in formats:
            raise RegistryError(f"{where}: chat_format {fmt!r} is not defined; known: {sorted(formats)}.")
        row.setdefault("chat_template", formats[fmt])
    for key in ("path", "config"):
        if row.get(key) is not None:
            row[key] = (base_dir / Path(row[key]).expanduser()).resolve()
    if is_folder_ref(row.get("tokenizer")):
        row["tokenizer"] = str((base_dir / Path(row["tokenizer"]).expanduser()).resolve())
    if row["source"] == "openai":
        _check_server_row(row, where)
    else:
        needed = {"local": "path", "modelscope": "modelscope_id", "huggingface": "hf_id"}[row["source"]]
        if not row.get(needed):
            raise RegistryError(f"{where}: source {row['source']!r} needs the field {needed!r}.")
    row["generation"] = MappingProxyType(dict(row.get("generation", {})))
    return ModelSpec(**row)


def _check_server_row(row: dict[str, Any], where: str) -> None:
    """A server row: its address and served name, a key variable's name (never a key), sane numbers."""
    for needed in ("base_url", "model"):
        if not row.get(needed):
            raise RegistryError(f"{where}: source 'openai' needs the field {needed!r}.")
    try:
        row["base_url"] = checked_base_url(str(row["base_url"]))
    except RegistryError as exc:
        raise RegistryError(f"{where}: {exc}") from None
    key_env = row.get("api_key_env")
    if key_env is not None and not _ENV_NAME.fullmatch(str(key_env)):
        raise RegistryError(f"{where}: api_key_env names the environment variable that holds the key (e.g. "
                            "VLLM_API_KEY); a key itself never goes in this file.")
    for number in ("context", "max_concurrent"):
        value = row.get(number)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise RegistryError(f"{where}: {number} must be a positive whole number, not {value!r}.")
    if row.setdefault("server", "auto") not in SERVERS:
        raise RegistryError(f"{where}: server must be one of {SERVERS}, not {row['server']!r}.")
    row.setdefault("backend", "openai")


def _read(file: Path, formats: dict[str, str]) -> list[ModelSpec]:
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"Cannot read the model list {file}: {exc}. Fix the file or remove it.") from exc
    formats.update(data.get("chat_formats", {}))
    return [_spec_from_row(row, file.parent, formats, file) for row in data.get("models", [])]


def load_registry(user_file: Path | None = None) -> Registry:
    """Built-in rows, then the user's file (rows with a known id replace the built-in ones)."""
    formats: dict[str, str] = {}
    specs = {s.id: s for s in _read(BUILTIN_FILE, formats)}
    if user_file is not None and user_file.is_file():
        for spec in _read(user_file, formats):
            specs[spec.id] = spec
    return Registry(tuple(specs.values()))
