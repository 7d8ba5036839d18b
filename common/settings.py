"""Runtime settings, read once from the environment into one typed object."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import MoEChatError

_PREFIX = "MOE_CHAT_"
# AutoDL's data disk: the system disk of its instances is small (tens of GB), so downloads go here when it exists and
# no cache folder is set (the seed tutorials download here too, so their copies are found).
AUTODL_DATA_DISK = Path("/root/autodl-tmp")


def autodl_data_disk() -> Path | None:
    return AUTODL_DATA_DISK if AUTODL_DATA_DISK.is_dir() else None


def _default_cache_dir() -> Path:
    if os.environ.get("MODELSCOPE_CACHE"):
        return Path(os.environ["MODELSCOPE_CACHE"])
    return autodl_data_disk() or Path.home() / ".cache" / "modelscope"


def cache_dir_origin(environ: dict[str, str] | None = None) -> str:
    """Why downloads go where they go, in words: which variable set the folder, or which default it is."""
    env = os.environ if environ is None else environ
    if env.get(_PREFIX + "CACHE_DIR"):
        return f"set by {_PREFIX}CACHE_DIR"
    if env.get("MODELSCOPE_CACHE"):
        return "set by MODELSCOPE_CACHE"
    if autodl_data_disk() is not None:
        return "the AutoDL data disk; MOE_CHAT_CACHE_DIR moves it"
    return "the default; MOE_CHAT_CACHE_DIR moves it"


def _default_db() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    base = Path(data_home) if data_home and Path(data_home).is_absolute() else Path.home() / ".local" / "share"
    return base / "moe-chat" / "conversations.db"


def _default_models_file() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "moe-chat" / "models.toml"


@dataclass(frozen=True)
class Settings:
    """Every runtime knob of the app; `Settings.from_env()` reads `MOE_CHAT_*` variables."""

    cache_dir: Path = field(default_factory=_default_cache_dir)
    models_file: Path = field(default_factory=_default_models_file)
    db: Path = field(default_factory=_default_db)  # the conversations database (SQLite)
    password: str | None = None  # when set, the page asks for it before showing anything
    api_key: str | None = None  # when set, /v1/* answers requests that bear it (the OpenAI-compatible API)
    default_model: str | None = None  # None: the demo on CPU-only machines, the first GPU model otherwise
    device: str = "auto"  # auto | cpu | cuda
    cpu_dtype: str = "float32"  # measured faster than bfloat16 for the demo on CPU (see bench/)
    gpu_dtype: str = "bfloat16"
    max_new_tokens: int = 512
    concurrency: int = 1  # generations running at once on the shared model; the others wait in line
    max_waiting_per_client: int = 4  # places in line one client address may hold at once (0: no cap)
    max_message_chars: int = 32_000  # longer messages are refused with a message saying so
    max_context: int = 0  # tokens of prompt + answer; 0: the model's own window (a cap saves KV-cache memory)
    stall_timeout_s: float = 300.0  # no token for this long ends a generation with an error
    connect_timeout_s: float = 10.0  # a model server that accepts no connection for this long is unreachable
    stream_interval_s: float = 0.05  # the page redraws a streaming answer at most 20 times a second
    save_interval_s: float = 3.0  # an answer being written is saved this often (a crash loses at most this)
    memory_refresh_s: float = 2.0
    add_servers: str = "on"  # "off" hides "Add a model server" (page users then reach only the rows of models.toml)
    model_roots: str = ""  # folders (os.pathsep-separated) under which "Add a local model folder" accepts one
    trusted_proxies: str = ""  # addresses (comma-separated, CIDR allowed) whose X-Forwarded-For is believed; none
    request_timeout_s: float = 20.0  # a connection that has not sent a whole request (headers, body) in this is closed
    server_hosts: str = ""  # hosts (comma-separated) "Add a model server" may reach; empty: any
    accounts_db: Path | None = None  # the accounts database (SQLite); None: accounts.db beside the conversations
    proxy_user_header: str = ""  # a header a trusted reverse proxy names the signed-in person in (X-Forwarded-User)
    proxy_secret: str | None = None  # the secret that proxy adds in X-MoE-Chat-Proxy-Secret; both needed for proxy mode
    sign_in_days: float = 14.0  # a sign-in (its cookie) lasts this long unless its person signs out

    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """MOE_CHAT_TRUSTED_PROXIES as networks (a bare address is a network of one)."""
        return tuple(ipaddress.ip_network(part.strip(), strict=False)
                     for part in self.trusted_proxies.split(",") if part.strip())

    def allowed_server_hosts(self) -> tuple[str, ...]:
        """MOE_CHAT_SERVER_HOSTS: the hosts "Add a model server" may reach (empty: any)."""
        return tuple(part.strip().lower() for part in self.server_hosts.split(",") if part.strip())

    def accounts_file(self) -> Path:
        """MOE_CHAT_ACCOUNTS_DB, else accounts.db in the conversation database's folder."""
        return self.accounts_db or self.db.parent / "accounts.db"

    def proxy_configured(self) -> bool:
        """Whether a reverse proxy names the person: a header to read and the secret that makes it believed."""
        if bool(self.proxy_user_header.strip()) != bool(self.proxy_secret):
            raise MoEChatError(f"{_PREFIX}PROXY_USER_HEADER and {_PREFIX}PROXY_SECRET (or proxy_secret in "
                               "secrets.toml) go together: the header names the person, the secret (which the proxy "
                               "adds and nobody else knows) makes it believed. Set both, or neither.")
        return bool(self.proxy_user_header.strip())

    def allowed_model_roots(self) -> tuple[Path, ...]:
        """Where local model folders may be added from: the setting, else the cache dir and the home folder."""
        if self.model_roots.strip():
            return tuple(Path(p).expanduser() for p in self.model_roots.split(os.pathsep) if p.strip())
        return (self.cache_dir, Path.home())

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from `MOE_CHAT_<FIELD>` variables, rejecting malformed values."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        for name, f in cls.__dataclass_fields__.items():
            raw = env.get(_PREFIX + name.upper())
            if raw is None or raw == "":
                continue
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            try:
                if "Path" in kind:
                    kwargs[name] = Path(raw).expanduser()
                elif kind == "int":
                    kwargs[name] = int(raw)
                elif kind == "float":
                    kwargs[name] = float(raw)
                else:
                    kwargs[name] = raw
            except ValueError:
                raise MoEChatError(f"{_PREFIX}{name.upper()}={raw!r} is not a valid {kind}: fix or unset it.") from None
        settings = cls(**kwargs)
        if settings.device not in ("auto", "cpu", "cuda"):
            raise MoEChatError(f"{_PREFIX}DEVICE must be auto, cpu or cuda, not {settings.device!r}.")
        try:
            settings.trusted_proxy_networks()
        except ValueError as exc:
            raise MoEChatError(f"{_PREFIX}TRUSTED_PROXIES={settings.trusted_proxies!r}: {exc}. Give addresses or "
                               "networks separated by commas, e.g. 10.0.0.2,192.168.1.0/24.") from None
        if settings.sign_in_days <= 0:
            raise MoEChatError(f"{_PREFIX}SIGN_IN_DAYS must be more than 0, not {settings.sign_in_days}.")
        if settings.add_servers not in ("on", "off"):
            raise MoEChatError(f"{_PREFIX}ADD_SERVERS must be on or off, not {settings.add_servers!r}.")
        return settings
