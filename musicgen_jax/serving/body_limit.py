"""The request body size limit: 413 ``{"detail": "request body larger than N bytes"}``.

A declared ``Content-Length`` over the limit is refused before the body is read; a body that
grows past it while being read (chunked uploads, a lying header) is cut off there. Starlette 1.10
has a ``RequestBodyLimitMiddleware`` (``FastAPI(max_body_size=...)``), but it answers
``text/plain`` "Content Too Large", where this API answers every error as JSON naming the limit,
and this project supports older Starlette; so the server keeps this small one.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from musicgen_jax.serving.responses import SafeJSONResponse, StartTracker


class _BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """Pure ASGI middleware refusing HTTP request bodies over ``max_bytes`` (WebSockets pass)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        refusal = SafeJSONResponse({"detail": f"request body larger than {limit} bytes"}, status_code=413)
        if _declared_length(scope) > limit:
            await refusal(scope, receive, send)
            return
        received = 0
        tracked = StartTracker(send)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, tracked)
        except _BodyTooLarge:
            if not tracked.started:  # once a response has begun there is no way to take it back
                await refusal(scope, receive, send)


def _declared_length(scope: Scope) -> int:
    """The request's Content-Length, 0 when absent or unreadable (the body is counted anyway)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
