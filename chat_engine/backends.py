"""The kinds of backend a registry row can name (its `backend` field), each with the loader that makes it."""

from __future__ import annotations

from collections.abc import Callable

from chat_engine.interface import BackendLoader
from common.errors import ModelLoadError
from common.settings import Settings

LoaderFactory = Callable[[Settings], BackendLoader]


def _transformers(settings: Settings) -> BackendLoader:
    from chat_engine.transformers_backend.loader import TransformersLoader

    return TransformersLoader(settings)


def _openai(settings: Settings) -> BackendLoader:
    from chat_engine.openai_backend.loader import OpenAILoader

    return OpenAILoader(settings)


_FACTORIES: dict[str, LoaderFactory] = {"transformers": _transformers, "openai": _openai}


def register_backend(name: str, factory: LoaderFactory) -> None:
    """Make rows with `backend = name` load through `factory(settings)` (a second backend, or a test's fake)."""
    _FACTORIES[name] = factory


def loader_for(name: str, settings: Settings) -> BackendLoader:
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ModelLoadError(f"Unknown backend {name!r}: a model row's backend is one of {sorted(_FACTORIES)}.") \
            from None
    return factory(settings)
