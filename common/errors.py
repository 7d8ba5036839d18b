"""Domain errors: each message tells the user what to do next."""

from __future__ import annotations


def one_line(exc: BaseException, limit: int = 200) -> str:
    """A library exception in one line for a message: its type and the first line of what it says."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return f"{type(exc).__name__}: {lines[0][:limit]}{'...' if len(lines[0]) > limit else ''}"


class MoEChatError(Exception):
    """Base of every error the app shows to a user; `str(error)` is the message to show."""


class RegistryError(MoEChatError):
    """A model registry file or row is invalid."""


class ModelNotFoundError(MoEChatError):
    """The model's files could not be found locally or downloaded."""


class ModelLoadError(MoEChatError):
    """The files were found but the model or tokenizer would not load."""


class ModelNotLoadedError(MoEChatError):
    """A chat was requested while no model is loaded."""


class ChatTemplateError(MoEChatError):
    """The model has no chat format to turn messages into a prompt."""


class InvalidParameterError(MoEChatError):
    """A generation parameter is unknown or out of range."""


class GenerationError(MoEChatError):
    """Generation failed part way; the conversation so far is kept."""


class GenerationTimeout(GenerationError):
    """No token arrived within the stall limit."""


class DiskSpaceError(ModelNotFoundError):
    """A download would not fit on the disk that holds the cache folder."""
