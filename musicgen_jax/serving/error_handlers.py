"""Exceptions into answers: the app's exception handlers and the catch-all for unexpected errors.

Unexpected exceptions are logged with an error id and answered ``500 {"detail": "internal server
error", "error_id": ...}``, never with internals. Starlette's own ``ServerErrorMiddleware`` would
answer too, but re-raises the exception afterwards (into the server's log, and into tests that
call the app directly), so the server catches it one layer further in.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from musicgen_jax.serving.errors import NotReady
from musicgen_jax.serving.queue import QueueFull
from musicgen_jax.serving.responses import SafeJSONResponse, StartTracker, error_response
from musicgen_jax.serving.security import retry_after_header

logger = logging.getLogger(__name__)

RETRY_SECONDS = 5  # what a 503 asks the client to wait


async def _http_error(request: Request, error: HTTPException) -> SafeJSONResponse:
    return error_response(error.status_code, str(error.detail), getattr(error, "headers", None))


async def _validation_error(request: Request, error: RequestValidationError) -> SafeJSONResponse:
    detail = [
        {
            "loc": [str(part) if not isinstance(part, int) else part for part in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "value_error")),
        }
        for e in error.errors()
    ]
    return SafeJSONResponse({"detail": detail}, status_code=422)


async def _unavailable(request: Request, error: NotReady | QueueFull) -> SafeJSONResponse:
    return error_response(503, str(error), retry_after_header(RETRY_SECONDS))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(NotReady, _unavailable)
    app.add_exception_handler(QueueFull, _unavailable)


class InternalErrorMiddleware:
    """Pure ASGI middleware: an exception nothing else handled becomes a logged 500 without internals."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = StartTracker(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            logger.exception("unhandled error %s on %s %s", error_id, scope.get("method"), scope.get("path"))
            if not tracked.started:  # once a response has begun there is no way to take it back
                body = {"detail": "internal server error", "error_id": error_id}
                await SafeJSONResponse(body, status_code=500)(scope, receive, send)
