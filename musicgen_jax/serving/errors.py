"""What the server's own work can refuse, as types (the HTTP and WebSocket layers map them to answers).

An error that belongs to one request field carries it as ``field``: the 422 ``loc`` comes from
that, never from the wording of a message. The library's field-carrying errors (``PromptError``,
``GenerationParamsError``, ``InvalidAttributeError``) become :class:`FieldError` where the server
calls the library (:mod:`.generation_request`).
"""

from __future__ import annotations


class NotReady(RuntimeError):
    """The model is still loading or warming up (or failed to)."""


class FieldError(ValueError):
    """A request value the server or the model cannot take; ``field`` names it (None: no one field)."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field


class AudioInputError(FieldError):
    """An uploaded file that is not usable audio; ``field`` is the upload's form field."""
