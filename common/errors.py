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


def generation_failed(exc: BaseException) -> GenerationError:
    """An unforeseen failure while generating, as the user is told it."""
    return GenerationError(f"Generation failed ({type(exc).__name__}: {exc}). The conversation is kept; try again, "
                           "and reload the model if it keeps failing.")


class GenerationTimeout(GenerationError):
    """No token arrived within the stall limit."""


class DiskSpaceError(ModelNotFoundError):
    """A download would not fit on the disk that holds the cache folder."""


class DownloadCancelled(MoEChatError):
    """The caller abandoned a download; what was fetched stays on disk for the next attempt."""


class PlanError(MoEChatError):
    """The planner cannot read, build or plan for this model or these inputs."""


class ContextOverflowError(MoEChatError):
    """The new message alone, with the answer's reserve, does not fit the model's context."""

    def __init__(self, prompt_tokens: int, max_new_tokens: int, context: int) -> None:
        self.prompt_tokens, self.max_new_tokens, self.context = prompt_tokens, max_new_tokens, context
        room = context - prompt_tokens
        advice = (f"Shorten it, or lower max new tokens to at most {room:,}." if room > 0
                  else "Shorten it: it is too long for this model even without an answer.")
        super().__init__(f"Your message needs {prompt_tokens:,} tokens (with the system prompt and chat format); "
                         f"with {max_new_tokens:,} tokens reserved for the answer it does not fit the model's "
                         f"{context:,}-token context. {advice}")


class LineFullError(MoEChatError):
    """A client already has as many requests waiting as it may."""


class ServerContextError(GenerationError):
    """A model server refused the conversation as longer than its context."""


class StoreError(MoEChatError):
    """The conversation database cannot be opened, read or written, or a conversation or import is invalid."""


class StaleConversationError(StoreError):
    """A change was asked of a conversation that another tab has changed since this one read it."""


class NotAllowedError(MoEChatError):
    """The signed-in person's role does not allow this action (an admin's)."""
