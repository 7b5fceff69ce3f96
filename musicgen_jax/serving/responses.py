"""How the API answers: JSON that cannot fail to render, errors in one shape, and their OpenAPI docs.

Every error is JSON: ``{"detail": "<message>"}``, or for 422 a list ``{"detail": [{"loc", "msg",
"type"}]}`` as FastAPI writes validation errors.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import Message, Send

from musicgen_jax.serving import schemas


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such floats become null rather than a crash."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


class SafeJSONResponse(JSONResponse):
    """JSON that cannot fail to render: non-finite floats become null, unencodable text is replaced."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(
            _finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str
        )
        return text.encode("utf-8", "replace")


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> SafeJSONResponse:
    return SafeJSONResponse({"detail": detail}, status_code=status, headers=headers)


def invalid(message: str, loc: tuple = ("body",)) -> RequestValidationError:
    """A 422 in FastAPI's shape, for refusals found past the schema (messages are user-facing)."""
    return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])


_ERRORS = {
    400: {"model": schemas.ErrorMessage, "description": "malformed multipart body"},
    401: {"model": schemas.ErrorMessage, "description": "missing or invalid API key"},
    404: {"model": schemas.ErrorMessage, "description": "no such task (or not yours)"},
    409: {"model": schemas.ErrorMessage, "description": "the task has not completed"},
    413: {"model": schemas.ErrorMessage, "description": "request body too large"},
    415: {"model": schemas.ErrorMessage, "description": "unsupported content type"},
    429: {"model": schemas.ErrorMessage, "description": "rate limit exceeded (see Retry-After)"},
    503: {
        "model": schemas.ErrorMessage,
        "description": "not ready yet, or the queue is full (see Retry-After)",
    },
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries of these error codes (for a route's decorator)."""
    return {code: _ERRORS[code] for code in codes}


class StartTracker:
    """An ASGI ``send`` that remembers whether the response has begun: after that a middleware can
    no longer answer in its place."""

    def __init__(self, send: Send):
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
