"""FastAPI dependencies: the server's parts (from ``app.state``), the caller, its API key and rate limit.

``create_app`` puts the :class:`~musicgen_jax.serving.service.MusicService`, the settings and the
request model (``GenerateRequest`` with this server's limits) on ``app.state``; routes take them
with ``Depends`` rather than closing over them.
"""

from __future__ import annotations

import dataclasses
import math

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from musicgen_jax.serving.schemas import GenerateRequest
from musicgen_jax.serving.security import retry_after_header
from musicgen_jax.serving.service import MusicService
from musicgen_jax.serving.settings import ServerSettings

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token (when the server has keys)")
_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="API key (when the server has keys)"
)


# HTTPConnection: these serve HTTP routes and WebSockets alike.
async def get_service(connection: HTTPConnection) -> MusicService:
    return connection.app.state.service


async def get_settings(connection: HTTPConnection) -> ServerSettings:
    return connection.app.state.settings


async def get_request_model(connection: HTTPConnection) -> type[GenerateRequest]:
    return connection.app.state.request_model


@dataclasses.dataclass(frozen=True)
class Caller:
    owner: str | None  # digest of the API key; None when keys are off
    identity: str  # what the rate limiter counts by


async def caller(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    header_key: str | None = Depends(_api_key_header),
    service: MusicService = Depends(get_service),
) -> Caller:
    """Who is calling: checks the API key when the server has keys."""
    if not service.keys.enabled:
        return Caller(None, f"ip:{request.client.host if request.client else 'unknown'}")
    key = credentials.credentials if credentials is not None else header_key
    owner = service.keys.owner_of(key)
    if owner is None:
        message = "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        raise HTTPException(
            401, message if key is None else "invalid API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return Caller(owner, f"key:{owner}")


async def limited_caller(
    who: Caller = Depends(caller), service: MusicService = Depends(get_service)
) -> Caller:
    """:func:`caller` plus the rate limit (for routes that start work)."""
    wait = service.limiter.acquire(who.identity)
    if wait > 0:
        service.metrics.rate_limited.inc()
        raise HTTPException(
            429, f"rate limit exceeded; retry in {math.ceil(wait)} s", headers=retry_after_header(wait)
        )
    return who
