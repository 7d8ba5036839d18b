"""The kinds of backend a registry row can name (its `backend` field): the loader that makes each, and what it can do.

What a kind can do is declared here, beside its loader, so the page can ask before anything is imported or loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chat_engine.interface import BackendLoader, Capabilities
from common.errors import ModelLoadError
from common.settings import Settings

LoaderFactory = Callable[[Settings], BackendLoader]

IN_PROCESS = Capabilities(load_options=True, experts_view=True, quantization=True)
SERVED = Capabilities(weights_elsewhere=True, lists_models=True, exact_counts=False)


@dataclass(frozen=True)
class BackendKind:
    make: LoaderFactory
    capabilities: Capabilities


def _transformers(settings: Settings) -> BackendLoader:
    from chat_engine.transformers_backend.loader import TransformersLoader

    return TransformersLoader(settings)


def _openai(settings: Settings) -> BackendLoader:
    from chat_engine.openai_backend.loader import OpenAILoader

    return OpenAILoader(settings)


_KINDS: dict[str, BackendKind] = {"transformers": BackendKind(_transformers, IN_PROCESS),
                                  "openai": BackendKind(_openai, SERVED)}


def register_backend(name: str, factory: LoaderFactory, capabilities: Capabilities = Capabilities()) -> None:
    """Make rows with `backend = name` load through `factory(settings)`, a backend that can do `capabilities`."""
    _KINDS[name] = BackendKind(factory, capabilities)


def _kind(name: str) -> BackendKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ModelLoadError(f"Unknown backend {name!r}: a model row's backend is one of {sorted(_KINDS)}.") \
            from None


def loader_for(name: str, settings: Settings) -> BackendLoader:
    return _kind(name).make(settings)


def capabilities_of(name: str) -> Capabilities:
    """What backends of kind `name` can do (Capabilities() for a name nothing registered: it will not load)."""
    return _KINDS[name].capabilities if name in _KINDS else Capabilities()
